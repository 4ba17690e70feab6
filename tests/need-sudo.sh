#!/usr/bin/env bash
# Makes sure sudo is here, for the --become tests (they make non-root users with and without
# sudo rights): installs it as root with apt-get, otherwise says what to install.
set -euo pipefail
if ! command -v sudo >/dev/null || ! command -v visudo >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing sudo (Volley's --become tests run commands through sudo -n)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo >/dev/null
  else
    echo "Volley's --become tests need sudo: install it (Debian: apt-get install sudo) and run again" >&2
    exit 1
  fi
fi
