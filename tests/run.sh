#!/usr/bin/env bash
# Runs Volley's whole test suite. The end-to-end tests start real OpenSSH sshd processes on
# loopback addresses, so OpenSSH's server is installed first where it is missing, and so are
# nroff and script, which the command-line tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/need-sshd.sh
tests/need-tools.sh
# The end-to-end tests drive the real binaries, so build them first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
