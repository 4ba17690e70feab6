#!/usr/bin/env bash
# Times `volley run true` on N hosts through agents and through SSH, side by side in one run:
# N volley-agent processes (a fresh PKI from `volley pki`, each agent on its own loopback
# address) next to an N-host sshd fleet. Prints wall time, controller CPU and peak RSS per
# transport (median of the rounds), the ratio SSH / agent, and the agents' idle RSS.
#
#   bench/agents.sh                  # 500 hosts, 3 rounds
#   bench/agents.sh --hosts 100 --rounds 5
#   bench/agents.sh --command 'uname -r'
set -euo pipefail
cd "$(dirname "$0")/.."
tests/need-sshd.sh
cargo build --release -p volley -p volley-agent -p volley-bench
exec target/release/volley-bench --agents --volley target/release/volley \
  --agent target/release/volley-agent "$@"
