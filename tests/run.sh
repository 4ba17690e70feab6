#!/usr/bin/env bash
# Runs Volley's whole test suite. The end-to-end tests start real OpenSSH sshd processes on
# loopback addresses (some inside a network namespace of their own), run commands through sudo
# and boot containers with systemd as PID 1, so OpenSSH's server, iproute2, sudo and
# systemd-nspawn are installed first where they are missing, and so are nroff and script, which
# the command-line tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/need-sshd.sh
tests/need-netns.sh
tests/need-sudo.sh
tests/need-systemd.sh
tests/need-tools.sh
# The end-to-end tests drive the real binaries, so build them first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
