#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and end-to-end
# tests, and the built-in scan over the bundled fixtures. Installs what it
# needs (idempotently) and needs only the Rust toolchain to start.
#
#   bash scripts/test.sh
#
# Builds go to $CARGO_TARGET_DIR (default ~/.cache/kaudit-target) so that a
# fresh clone reuses earlier builds. PROPTEST_CASES bounds the property
# tests (default 256 per property).
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

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "build"
cargo build --locked --all-targets

step "tests (unit, property, end-to-end)"
cargo nextest run --locked --no-fail-fast

step "kaudit rules test (the catalogue's inline tests)"
"$CARGO_TARGET_DIR/debug/kaudit" rules test

step "smoke: scan the bundled fixtures"
"$CARGO_TARGET_DIR/debug/kaudit" scan fixtures/ >/dev/null

step "done"
