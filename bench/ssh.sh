#!/usr/bin/env bash
# Times `volley run` on a local fleet of sshd-backed hosts on distinct loopback addresses:
# `true` and `sleep 2`, with and without 50 ms of added round-trip time (a delaying TCP relay in
# front of each host; this kernel has no netem). Prints wall time, controller CPU and peak RSS
# per host, and the fleet's wall time as a ratio of one host's.
#
#   bench/ssh.sh                 # 200 hosts
#   bench/ssh.sh --hosts 500     # any N; 1000 works (63 sshd processes)
#   bench/ssh.sh --hosts 500 --no-rtt --command true
set -euo pipefail
cd "$(dirname "$0")/.."
tests/need-sshd.sh
cargo build --release -p volley -p volley-bench
exec target/release/volley-bench --volley target/release/volley "$@"
