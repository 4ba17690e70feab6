#!/usr/bin/env bash
# Makes sure the tools the end-to-end tests use besides sshd are here: nroff (groff-base) to
# render volley's man pages, script (util-linux) for a pseudo-terminal. Installs them as root
# with apt-get, otherwise says what to install.
set -euo pipefail
missing=()
command -v nroff >/dev/null || missing+=(groff-base)
command -v script >/dev/null || missing+=(bsdutils)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} (Volley's tests render man pages and use a pseudo-terminal)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "Volley's tests need: ${missing[*]} (Debian: sudo apt-get install ${missing[*]}); install and run again" >&2
    exit 1
  fi
fi
