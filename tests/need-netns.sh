#!/usr/bin/env bash
# Makes sure the tools of the tests that put hosts in a network namespace of their own are here:
# `ip` (iproute2) brings its loopback up, `unshare` and `nsenter` (util-linux) make and enter it.
# Installs iproute2 as root with apt-get where it is missing, otherwise says what to install.
set -euo pipefail
if ! command -v ip >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing iproute2 (Volley's jump host tests put hosts in a network namespace)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
  else
    echo "Volley's jump host tests need ip: install iproute2 (Debian: sudo apt-get install iproute2) and run again" >&2
    exit 1
  fi
fi
for tool in unshare nsenter; do
  if ! command -v "$tool" >/dev/null; then
    echo "Volley's jump host tests need $tool: install util-linux and run again" >&2
    exit 1
  fi
done
