#!/usr/bin/env bash
# Handshake admission against a handshake storm: `volley run -p N true` on N sshd hosts with every
# handshake started at once (`--max-handshakes N`: volley before admission) and with the
# adaptive default. First on the plain fleet, then on the same fleet made CPU-limited: its sshd
# processes (and the per-connection processes they fork) go into one cgroup whose CFS quota
# (--sshd-cpus, default 0.5 CPU over 10 ms periods) makes the fleet's handshakes several times
# slower, as on small or busy servers. Prints outcomes per kind, wall time and the slowest
# connect for each case, then how much slower the limited fleet is (a lone handshake, and the
# fleet's throughput). Needs root (sshd, cgroups); the cgroup is removed at the end.
#
#   bench/admission.sh                       # 500 hosts, 5 s connect timeout
#   bench/admission.sh --hosts 300 --sshd-cpus 0.5 --connect-timeout-ms 10000
set -euo pipefail
cd "$(dirname "$0")/.."
tests/need-sshd.sh
cargo build --release -p volley -p volley-bench
exec target/release/volley-bench --admission --volley target/release/volley "$@"
