#!/bin/sh
# Debian packages an image stage needs, on either base: python:3.11-slim (Python in /usr/local)
# or the plain Debian base `make images` builds without a registry (Python 3.11 from apt).
#   install-system.sh build    Python 3.11 with venv, and a compiler only when no wheelhouse came
#   install-system.sh runtime  Python 3.11 and the given extra packages
set -eu
role=$1
shift
pkgs="ca-certificates $*"
debian_python=no
if ! command -v python3.11 >/dev/null 2>&1; then
  debian_python=yes
  pkgs="$pkgs python3.11 python3.11-venv"
fi
if [ "$role" = build ] && ! ls /inputs/wheels/*.whl >/dev/null 2>&1; then
  # No wheelhouse: pip builds llama-cpp-python and other sdists itself.
  pkgs="$pkgs build-essential cmake"
  [ "$debian_python" = no ] || pkgs="$pkgs python3.11-dev"
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs
rm -rf /var/lib/apt/lists/*
