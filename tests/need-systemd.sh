#!/usr/bin/env bash
# Makes sure systemd and systemd-nspawn are here, for the tests that boot this machine's OS in
# containers with systemd as PID 1 (tests/tests/agent_systemd): installs them as root with
# apt-get, otherwise says what to install. The machine itself need not run systemd.
set -euo pipefail
if ! command -v systemd-nspawn >/dev/null || [ ! -x /lib/systemd/systemd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing systemd and systemd-container (Volley's tests boot containers with systemd as PID 1)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd systemd-container >/dev/null
  else
    echo "Volley's systemd tests need systemd-nspawn: install systemd and systemd-container (Debian: apt-get install systemd systemd-container) and run again" >&2
    exit 1
  fi
fi
