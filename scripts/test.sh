#!/usr/bin/env bash
# Runs every test of mcp-delegate (unit, integration against real
# PostgreSQL clusters, official-client interop), installing what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
ensure_python_client
ensure_test_servers

# The habits CI guards, each failing the run: formatting, lints (no
# unwrap/expect outside tests, unsafe only where allowed: see the
# workspace lints in Cargo.toml) and documentation without broken links.
echo "== checks: cargo fmt, cargo clippy, cargo doc" >&2
if ! cargo fmt --all --check; then
  echo "test: the files above are not formatted; run: cargo fmt --all" >&2
  exit 1
fi
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

# The integration tests start the real host binary and load the real plugin
# libraries, so build the whole workspace first.
cargo build --workspace --locked
# Every host the suite starts writes its audit log here, and the fixtures
# record the tokens and literals they use; the last test binary
# (zz_audit_sweep) looks for each of them in every audit line.
export MCPD_TEST_AUDIT_DIR="$PWD/target/audit-suite"
rm -rf "$MCPD_TEST_AUDIT_DIR"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
