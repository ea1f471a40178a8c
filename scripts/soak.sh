#!/usr/bin/env bash
# The soak (not part of the test suite): 30 minutes of mixed load at about
# half of the measured peak against a release build, writing
# target/soak/soak.csv and target/soak/soak.svg. Pass: RSS slope under
# 1 MB per 10 minutes after warm-up, and no unexpected outcome.
#   ./scripts/soak.sh              # 30 minutes
#   ./scripts/soak.sh --minutes 5  # a shorter run
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo build --release --workspace --locked
exec target/release/mcp-delegate-soak --out target/soak "$@"
