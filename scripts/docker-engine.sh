#!/usr/bin/env bash
# A Docker engine for `make images`, `make cluster-up` and the running-Pods tests.
#
#   scripts/docker-engine.sh ensure   print "running" if an engine answers; otherwise start one
#                                     (installing Debian's docker.io first when root) and print "started"
#   scripts/docker-engine.sh stop     stop the engine this script started (never one it did not start)
#   scripts/docker-engine.sh status   "running" / "stopped"
#
# The engine it starts runs every container through `vp-runc`, a wrapper of runc that clamps a
# negative oom_score_adj to 0: some VMs (these among them) refuse a negative value, and kubelet
# gives every pod sandbox -998, which would make every Pod fail with "can't get final child's PID
# from pipe". On machines that allow it the clamp changes nothing but the OOM-kill order.
set -euo pipefail

VP_HOME=${VP_HOME:-$HOME/.cache/voice-pipeline}
STATE=$VP_HOME/docker
PIDFILE=$STATE/dockerd.pid
LOG=$STATE/dockerd.log
WRAPPER=$VP_HOME/bin/vp-runc

log() { echo ">> $*" >&2; }

answers() { docker info >/dev/null 2>&1; }

install_engine() {
  command -v dockerd >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "a Docker engine is needed and none answers; dockerd is not installed: install one (Debian: apt-get install docker.io) or set DOCKER_HOST" >&2
    exit 1
  fi
  log "apt-get install docker.io"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io iptables >/dev/null
}

write_wrapper() {
  mkdir -p "$(dirname "$WRAPPER")"
  local runc; runc=$(command -v runc || echo /usr/sbin/runc)
  cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# runc, with a negative process.oomScoreAdj in the bundle's config.json raised to 0 (see
# scripts/docker-engine.sh in voice-pipeline for why).
bundle=""
prev=""
for arg in "\$@"; do
  [ "\$prev" = "--bundle" ] || [ "\$prev" = "-b" ] && bundle="\$arg"
  case "\$arg" in --bundle=*) bundle="\${arg#--bundle=}" ;; esac
  prev="\$arg"
done
if [ -n "\$bundle" ] && [ -f "\$bundle/config.json" ]; then
  sed -i -E 's/"oomScoreAdj":-[0-9]+/"oomScoreAdj":0/' "\$bundle/config.json"
fi
exec $runc "\$@"
EOF
  chmod 0755 "$WRAPPER.tmp"
  mv "$WRAPPER.tmp" "$WRAPPER"
}

start_engine() {
  if [ -n "${DOCKER_HOST:-}" ]; then
    echo "a Docker engine is needed (make images, make cluster-up, make test): DOCKER_HOST=$DOCKER_HOST does not answer (unset it to let make start a local one)" >&2
    exit 1
  fi
  [ "$(id -u)" = 0 ] || { echo "a Docker engine is needed and none answers: starting one needs root (or start one yourself and set DOCKER_HOST)" >&2; exit 1; }
  install_engine
  write_wrapper
  mkdir -p "$STATE"
  # Pods reach Services through iptables rules on bridged traffic (kube-proxy).
  modprobe br_netfilter 2>/dev/null || true
  log "starting dockerd (log: $LOG)"
  nohup dockerd --pidfile "$PIDFILE" --add-runtime "vp-runc=$WRAPPER" --default-runtime vp-runc \
    --exec-opt native.cgroupdriver=cgroupfs --storage-driver overlay2 >"$LOG" 2>&1 &
  local waited=0
  until answers; do
    sleep 0.5
    waited=$((waited + 1))
    if [ $waited -gt 120 ]; then
      echo "dockerd did not answer within 60 s; its log ($LOG) ends:" >&2
      tail -15 "$LOG" >&2
      exit 1
    fi
  done
  touch "$STATE/started-by-voice-pipeline"
}

case ${1:-} in
  ensure)
    if answers; then echo running; else start_engine; echo started; fi
    ;;
  stop)
    if [ -f "$STATE/started-by-voice-pipeline" ] && [ -f "$PIDFILE" ]; then
      pid=$(cat "$PIDFILE")
      log "stopping dockerd ($pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$STATE/started-by-voice-pipeline"
    fi
    ;;
  status)
    if answers; then echo running; else echo stopped; fi
    ;;
  *)
    echo "usage: $0 ensure|stop|status" >&2
    exit 2
    ;;
esac
