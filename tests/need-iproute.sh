#!/usr/bin/env bash
# Makes sure `ip` (iproute2) is here, for the end-to-end tests that cut a network for real in a
# network namespace of their own: installs iproute2 as root with apt-get, otherwise says what to
# install.
set -euo pipefail
if ! command -v ip >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing iproute2 (Volley's resume tests cut a network namespace's link)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
  else
    echo "Volley's tests need ip(8): install iproute2 (Debian: sudo apt-get install iproute2) and run again" >&2
    exit 1
  fi
fi
