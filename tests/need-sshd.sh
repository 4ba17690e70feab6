#!/usr/bin/env bash
# Makes sure OpenSSH's sshd and ssh-keygen are here, for the end-to-end tests, the demo and the
# benchmarks: installs openssh-server as root with apt-get, otherwise says what to install.
set -euo pipefail
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing openssh-server (Volley's tests and demo start real sshd processes)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
  else
    echo "Volley's tests and demo need OpenSSH's sshd and ssh-keygen: install openssh-server (Debian: sudo apt-get install openssh-server) and run again" >&2
    exit 1
  fi
fi
# sshd started as root refuses to run without its privilege-separation directory.
if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd; fi
