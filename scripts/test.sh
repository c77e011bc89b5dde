#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and end-to-end
# tests, and the built-in scan over the bundled fixtures. Installs what it
# needs (idempotently) and needs only the Rust toolchain to start.
#
#   bash scripts/test.sh
#
# Builds go to $CARGO_TARGET_DIR (default ~/.cache/kaudit-target) so that a
# fresh clone reuses earlier builds. PROPTEST_CASES bounds the property
# tests (default 256 per property). The PostgreSQL store's tests get a
# scratch PostgreSQL server, started here and removed on exit
# (KAUDIT_TEST_POSTGRES_URL; set it to use a server of your own).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kaudit-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

step "tools"
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt || true
# A Kafka-protocol broker for the Kafka source's end-to-end test (Apache
# Kafka's JVM build cannot be fetched here). Built once (about 10 minutes),
# then reused from ~/.cargo/bin.
if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  cargo install --locked tansu --version 0.6.0 --features dynostore
fi
export PATH="$HOME/.cargo/bin:$PATH"
# A real SMTP server for the email sink's end-to-end test (aiosmtpd, from
# PyPI, into a venv under ~/.cache).
if [ ! -x "$HOME/.cache/kaudit-venv/bin/python" ] || ! "$HOME/.cache/kaudit-venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m venv "$HOME/.cache/kaudit-venv"
  "$HOME/.cache/kaudit-venv/bin/pip" install --quiet aiosmtpd==1.4.6
fi

# A real browser for the findings console's end-to-end test: Debian's
# chromium and chromedriver (no browser download), installed once.
if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium chromium-driver >/dev/null
fi

# A real PostgreSQL server for the PostgreSQL store's tests: a scratch
# cluster (trust auth, superuser kaudit, fsync off) on a free port of
# 127.0.0.1, removed when this script exits, however it exits. The tests
# create their own databases through KAUDIT_TEST_POSTGRES_URL; set it
# beforehand to use a server of your own instead. The binaries come from
# Debian's postgresql package (installed once), the newest version found.
pg_bin=""
find_pg_bin() {
  local d
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
      pg_bin=$d
      return 0
    fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null; then
    pg_bin=$(dirname "$(readlink -f "$(command -v initdb)")")
    [ -x "$pg_bin/pg_ctl" ] && [ -x "$pg_bin/postgres" ] && return 0
    pg_bin=""
  fi
  return 1
}
if [ -z "${KAUDIT_TEST_POSTGRES_URL:-}" ]; then
  if ! find_pg_bin; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    find_pg_bin || { echo "test.sh: no initdb/pg_ctl/postgres after apt-get install postgresql" >&2; exit 1; }
  fi
  # PostgreSQL refuses to run as root: as root, the server runs as postgres
  # (made by the Debian package) or a system user made for it.
  pg_user=""
  if [ "$(id -u)" -eq 0 ]; then
    if id -u postgres >/dev/null 2>&1; then
      pg_user=postgres
    else
      id -u kaudit-pg >/dev/null 2>&1 \
        || useradd --system --no-create-home --shell /usr/sbin/nologin kaudit-pg
      pg_user=kaudit-pg
    fi
  fi
  # as_pg CMD...: CMD as the server's user, from the scratch directory.
  as_pg() {
    if [ -z "$pg_user" ]; then
      (cd "$pg_dir" && "$@")
    elif command -v runuser >/dev/null; then
      (cd "$pg_dir" && runuser -u "$pg_user" -- "$@")
    else
      # shellcheck disable=SC2016 # $0 and $@ are the inner shell's
      (cd "$pg_dir" && su -s /bin/sh -c '"$0" "$@"' "$pg_user" -- "$@")
    fi
  }
  pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/kaudit-pg.XXXXXX")
  if [ -n "$pg_user" ]; then
    chown "$pg_user" "$pg_dir"
    # A TMPDIR the server's user cannot reach (under /root, say): use /tmp.
    if ! as_pg test -w "$pg_dir" 2>/dev/null; then
      rm -rf "$pg_dir"
      pg_dir=$(mktemp -d /tmp/kaudit-pg.XXXXXX)
      chown "$pg_user" "$pg_dir"
    fi
  fi
  stop_pg() {
    if [ -f "$pg_dir/data/postmaster.pid" ]; then
      as_pg "$pg_bin/pg_ctl" stop -D "$pg_dir/data" -m immediate -w -t 30 >/dev/null 2>&1 || true
    fi
    rm -rf "$pg_dir"
  }
  trap 'stop_pg' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  free_port() {
    if command -v python3 >/dev/null; then
      python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
      local p
      for _ in $(seq 1 100); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
      done
      echo "test.sh: no free port found for PostgreSQL" >&2
      return 1
    fi
  }
  if ! as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U kaudit --auth=trust --encoding=UTF8 --locale=C --no-sync \
    >"$pg_dir/initdb.log" 2>&1; then
    cat "$pg_dir/initdb.log" >&2
    echo "test.sh: initdb failed (above)" >&2
    exit 1
  fi
  # TLS, for the test of sslmode=require: a CA of the run's own and a
  # server certificate for 127.0.0.1 it signed (openssl, from Debian).
  if ! command -v openssl >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >/dev/null
  fi
  (
    cd "$pg_dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj /CN=kaudit-test-ca -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.crt 2>/dev/null
    chmod 600 server.key
    [ -z "$pg_user" ] || chown "$pg_user" server.key server.crt
  )
  # Fast and quiet, for tests only: nothing here survives the run.
  cat >>"$pg_dir/data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = '$pg_dir/server.crt'
ssl_key_file = '$pg_dir/server.key'
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg_dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
max_parallel_workers_per_gather = 0
log_min_messages = warning
CONF
  # A port another process takes between choosing and binding: try again.
  pg_started=""
  for _ in 1 2 3; do
    pg_port=$(free_port)
    if as_pg "$pg_bin/pg_ctl" start -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 30 \
      -o "-p $pg_port" >/dev/null 2>&1; then
      pg_started=1
      break
    fi
    grep -q 'could not bind\|Address already in use' "$pg_dir/server.log" 2>/dev/null || break
  done
  # pg_ctl -w waited for it; check from outside too, as the tests connect.
  pg_ready() {
    if [ -x "$pg_bin/pg_isready" ]; then
      "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U kaudit -d postgres
    else
      (exec 3<>"/dev/tcp/127.0.0.1/$pg_port") 2>/dev/null
    fi
  }
  if [ -n "$pg_started" ]; then
    pg_started=""
    for _ in $(seq 1 30); do
      if pg_ready; then pg_started=1; break; fi
      sleep 1
    done
  fi
  if [ -z "$pg_started" ]; then
    echo "test.sh: PostgreSQL ($pg_bin) did not accept connections on 127.0.0.1:$pg_port within 30 s; its log:" >&2
    cat "$pg_dir/server.log" >&2 || true
    exit 1
  fi
  export KAUDIT_TEST_POSTGRES_URL="postgres://kaudit@127.0.0.1:$pg_port/postgres"
  # kaudit verifies the server's certificate whenever TLS is used (the
  # default sslmode, prefer, uses it when the server offers it): trust the
  # run's CA, as a deployment with a private CA does.
  export KAUDIT_TEST_POSTGRES_CA="$pg_dir/ca.crt"
  export PGSSLROOTCERT="$pg_dir/ca.crt"
  echo "PostgreSQL $("$pg_bin/postgres" --version | sed 's/^postgres (PostgreSQL) //') ($pg_bin) on 127.0.0.1:$pg_port: KAUDIT_TEST_POSTGRES_URL=$KAUDIT_TEST_POSTGRES_URL"
else
  echo "PostgreSQL: the given KAUDIT_TEST_POSTGRES_URL (no scratch server)"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "build"
cargo build --locked --all-targets

step "tests (unit, property, end-to-end)"
cargo nextest run --locked --no-fail-fast

step "store and library unit tests again, on PostgreSQL"
KAUDIT_TEST_STORE=postgres cargo nextest run --locked --no-fail-fast --lib

step "kaudit rules test (the catalogue's inline tests)"
"$CARGO_TARGET_DIR/debug/kaudit" rules test

step "smoke: scan the bundled fixtures"
"$CARGO_TARGET_DIR/debug/kaudit" scan fixtures/ >/dev/null

step "done"
