#!/usr/bin/env bash
# Makes sure systemd, systemd-nspawn and D-Bus are here, for the tests that boot this machine's
# OS in containers with systemd as PID 1 (tests/tests/agent_systemd; the agent there starts
# commands as transient units over the system bus): installs them as root with apt-get,
# otherwise says what to install. The machine itself need not run systemd.
set -euo pipefail
if ! command -v systemd-nspawn >/dev/null || [ ! -x /lib/systemd/systemd ] ||
  ! command -v dbus-daemon >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing systemd, systemd-container and dbus (Volley's tests boot containers with systemd as PID 1)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd systemd-container dbus >/dev/null
  else
    echo "Volley's systemd tests need systemd-nspawn and D-Bus: install systemd, systemd-container and dbus (Debian: apt-get install systemd systemd-container dbus) and run again" >&2
    exit 1
  fi
fi
