# Operator and e2e: real kube-apiserver/etcd/controller-manager binaries, kubectl and helm, cached in $(VP_HOME)/bin.
.PHONY: kube-bins e2e e2e-kind plan calibrate

KUBE_STAMP := $(VP_HOME)/bin/kubernetes-1.20.2/kube-controller-manager
TOOLS_STAMP := $(VP_HOME)/bin/helm-3.17.2

$(TOOLS_STAMP): | $(VENV)/bin/python
	PYTHON=$(PY) bash scripts/kube-local.sh tools

$(KUBE_STAMP):
	bash scripts/kube-local.sh build

kube-bins: $(TOOLS_STAMP) $(KUBE_STAMP) ## kubectl + helm (pinned) and a local control plane built from Debian's source (once)

test-prereqs:: kube-bins

e2e: install kube-bins ## operator e2e tests (existing KUBECONFIG via VP_E2E_KUBECONFIG, kind with Docker, else local apiserver)
	$(PY) -m pytest tests/e2e -q $(PYTEST_ARGS)

e2e-kind: install ## the same e2e tests on kind (needs Docker and the kind binary)
	@command -v kind >/dev/null || { echo "kind not found: install it (https://kind.sigs.k8s.io) or use 'make e2e'"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "no Docker engine answers: kind needs one"; exit 1; }
	$(PY) -m pytest tests/e2e -q $(PYTEST_ARGS)

plan: $(INSTALL_STAMP) ## print the capacity plan for 60 devices on each node size
	$(VENV)/bin/voice-pipeline plan --compare --devices 60

calibrate: install ## re-measure the cost profile on this machine (writes operator/voice_operator/data/cost-profile.json)
	$(VENV)/bin/voice-pipeline calibrate --output operator/voice_operator/data/cost-profile.json
