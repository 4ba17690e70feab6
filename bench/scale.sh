#!/usr/bin/env bash
# 10,000 hosts through agents in one run, on this machine: a few volley-agent processes (10)
# each serve many hosts. They run in a network namespace of the rig's own that answers on every
# address of 198.19.0.0/16 (a local route for the range; reached over a veth pair), each on
# 0.0.0.0 and a port of its own, so that every host has an address of its own, as in a real
# fleet; each agent's certificate (from a CA made by `volley pki init`) names its hosts. volley
# dials one TCP + TLS connection per host and checks each host's name against the certificate.
# Runs `true` on 500 hosts, then on all of them (default -p, then every host at once), and
# prints wall, controller CPU per host, peak RSS and descriptors, the outcomes, the journal's
# records, and the big run against the 500-host run scaled by the host count.
#
# Last, `exec sleep 15` on 2000 hosts at once (--held N, 0 to skip): their sessions are all open
# together, which shows what one connected host costs the controller in memory and descriptors.
# And the floor: the controller's side of one TLS handshake, measured in memory.
#
# The open-file limit is raised here, for this script and what it starts (one descriptor per
# host for volley, one per connection for each agent), to 65536 where root may, otherwise to the
# hard limit; the rig refuses to start (and says so) if that cannot hold every host. Needs root
# (the namespace, the limit); the namespace is deleted at the end.
#
#   bench/scale.sh                                # 10000 hosts, 10 agents
#   bench/scale.sh --hosts 20000 --agent-processes 20 --baseline 1000 --held 4000
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
cargo build --release -p volley -p volley-agent -p volley-bench
exec target/release/volley-bench --scale --volley target/release/volley \
  --agent target/release/volley-agent "$@"
