#!/usr/bin/env bash
# Runs the mcp-delegate demo: two throwaway PostgreSQL clusters and the
# server in front of them. Installs what is missing. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --workspace --locked
exec target/release/mcp-delegate-demo
