#!/usr/bin/env bash
# Times `volley push` of one file to N hosts over SSH and through agents, and the same bytes sent
# by `volley run --stdin FILE -- 'cat > PATH'` where volley has --stdin. Every host (one sshd or
# one agent) runs in a mount namespace of its own with its own tmpfs, so each really writes the
# file: this needs root and util-linux (unshare, nsenter). Each round pushes new random content;
# a last push of the same content times a fleet that is already up to date. Prints wall time,
# controller CPU per host and peak RSS per case, median of the rounds, and the load average.
#
#   bench/push.sh                        # 1 MiB to 500 + 500 hosts, 3 rounds
#   bench/push.sh --hosts 100 --size 10485760 --rounds 5
#   bench/push.sh --transport agent      # agents only (no sshd fleet to start)
set -euo pipefail
cd "$(dirname "$0")/.."
tests/need-sshd.sh
cargo build --release -p volley -p volley-agent -p volley-bench
exec target/release/volley-bench --push --volley target/release/volley \
  --agent target/release/volley-agent "$@"
