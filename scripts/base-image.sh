#!/usr/bin/env bash
# The base image `make images` builds on when no registry can give it python:3.11-slim:
# a minimal Debian bookworm made by debootstrap from the Debian mirror this machine's apt already
# uses, imported into the local Docker engine. Python and the rest come from apt inside the build.
#
#   scripts/base-image.sh NAME:TAG    build it once (kept in the engine; the rootfs tarball is
#                                     cached in $VP_HOME/images, so a new engine imports it in seconds)
set -euo pipefail

IMAGE=${1:?usage: $0 NAME:TAG}
VP_HOME=${VP_HOME:-$HOME/.cache/voice-pipeline}
SUITE=bookworm
CACHE=$VP_HOME/images/debian-$SUITE-minbase.tar

log() { echo ">> $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi

# The first Debian archive URI of a bookworm `deb` source in /etc/apt (deb822 or one-line format).
debian_mirror() {
  local uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk 'BEGIN{RS=""} /(^|\n)Types:[^\n]*deb([ \n]|$)/ && /(^|\n)Suites:[^\n]*(^| )'"$SUITE"'([ \n]|$)/ {
                 if (match($0, /URIs:[ ]*[^ \n]+/)) { u = substr($0, RSTART, RLENGTH); sub(/URIs:[ ]*/, "", u); print u; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if ($(i+1) == "'"$SUITE"'") { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
}

if [ ! -s "$CACHE" ]; then
  [ "$(id -u)" = 0 ] || { echo "building the base image needs root (debootstrap), or pass BASE_IMAGE=python:3.11-slim-bookworm where a registry is reachable" >&2; exit 1; }
  command -v debootstrap >/dev/null || { log "apt-get install debootstrap"; apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { echo "no Debian $SUITE source in /etc/apt to debootstrap from" >&2; exit 1; }
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  log "debootstrap --variant=minbase $SUITE from this machine's Debian mirror (one time, ~90 s)"
  debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  mkdir -p "$(dirname "$CACHE")"
  tar -C "$root" -c . >"$CACHE.tmp"
  mv "$CACHE.tmp" "$CACHE"
fi
log "importing $CACHE as $IMAGE"
docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' "$CACHE" "$IMAGE" >/dev/null
