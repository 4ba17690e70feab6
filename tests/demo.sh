#!/usr/bin/env bash
# Builds volley and runs it on a throwaway local fleet of real sshd hosts on loopback addresses
# (default 20; `tests/demo.sh 200` for more). Everything it starts and writes is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/need-sshd.sh
cargo build --quiet -p volley -p volley-tests --bins
exec target/debug/volley-demo "$@"
