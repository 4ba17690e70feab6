#!/usr/bin/env bash
# Checks deploy/volley-agent.service with `systemd-analyze verify`, as CI does, that the exposure
# the unit states in its header is the one `systemd-analyze security` measures, and that it is
# no more than 2.0 (what issue 8 asked of the agent's unit).
#
# The unit runs /usr/local/bin/volley-agent, which a build machine does not have, and verify
# refuses a unit whose binary is missing; so a copy whose ExecStart names the binary built in
# target/ (or $1) is verified. systemd-analyze only warns about a bad value, with status 0, so
# any message at all fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."
# The highest exposure the unit may have, in tenths (systemd-analyze prints one decimal).
max_tenths=20
binary="$(realpath "${1:-target/debug/volley-agent}")"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
  else
    echo "verify-unit: systemd-analyze is missing: install systemd (Debian: sudo apt-get install systemd)" >&2
    exit 1
  fi
fi
if [ ! -x "$binary" ]; then
  echo "verify-unit: $binary is missing: cargo build -p volley-agent" >&2
  exit 1
fi
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed "s|^ExecStart=/usr/local/bin/volley-agent |ExecStart=$binary |" \
  deploy/volley-agent.service > "$dir/volley-agent.service"
if ! grep -q "^ExecStart=$binary " "$dir/volley-agent.service"; then
  echo "verify-unit: the unit's ExecStart no longer runs /usr/local/bin/volley-agent" >&2
  exit 1
fi
messages="$(systemd-analyze verify "$dir/volley-agent.service" 2>&1)" || {
  echo "$messages" >&2
  exit 1
}
if [ -n "$messages" ]; then
  echo "verify-unit: systemd-analyze has something to say about the unit:" >&2
  echo "$messages" >&2
  exit 1
fi
stated="$(sed -n 's/^# Exposure under `systemd-analyze security`: \([0-9.]*\) .*/\1/p' \
  deploy/volley-agent.service)"
analysis="$(systemd-analyze security --offline=yes "$dir/volley-agent.service" 2>&1)"
measured="$(printf '%s\n' "$analysis" |
  sed -n 's/.*Overall exposure level for volley-agent.service: \([0-9.]*\).*/\1/p')"
if [ -z "$measured" ] || [ "$measured" != "$stated" ]; then
  echo "$analysis" >&2
  echo "verify-unit: systemd-analyze security measures exposure ${measured:-none}; the unit states ${stated:-none}" >&2
  exit 1
fi
if [ "${measured/./}" -gt "$max_tenths" ]; then
  echo "$analysis" >&2
  echo "verify-unit: systemd-analyze security measures exposure $measured; the unit must stay at 2.0 or below" >&2
  exit 1
fi
echo "verify-unit: deploy/volley-agent.service is valid; systemd-analyze security exposure $measured"
