# Operator and e2e: real kube-apiserver/etcd/controller-manager binaries, kubectl and helm, cached in $(VP_HOME)/bin.
.PHONY: kube-bins e2e e2e-kind plan calibrate
CLUSTER_DEPS := etcd-server dnsmasq-base iptables conntrack openssl

KUBE_STAMP := $(VP_HOME)/bin/kubernetes-1.20.2/pause
TOOLS_STAMP := $(VP_HOME)/bin/helm-3.17.2

$(TOOLS_STAMP): | $(VENV)/bin/python
	PYTHON=$(PY) bash scripts/kube-local.sh tools

$(KUBE_STAMP):
	bash scripts/kube-local.sh build

kube-bins: $(TOOLS_STAMP) $(KUBE_STAMP) ## kubectl + helm (pinned) and a local control plane built from Debian's source (once)

test-prereqs:: kube-bins cluster-packages

cluster-packages: ## Debian packages of the local cluster (DNS, iptables for kube-proxy)
	@bash scripts/kube-local.sh apt $(CLUSTER_DEPS)

e2e: install kube-bins cluster-packages docker-engine images ## e2e tests: on VP_E2E_KUBECONFIG's cluster, kind, or the local cluster with a node (see README)
	VP_E2E_REQUIRE_PODS=1 $(PY) -m pytest tests/e2e -q $(PYTEST_ARGS)

e2e-kind: install kube-bins ## the same e2e tests on kind (needs Docker and the kind binary; loads the images of `make images`)
	@command -v kind >/dev/null || { echo "kind not found: install it (https://kind.sigs.k8s.io) or use 'make e2e'"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "no Docker engine answers: kind needs one"; exit 1; }
	$(MAKE) --no-print-directory images
	VP_E2E_REQUIRE_PODS=1 $(PY) -m pytest tests/e2e -q $(PYTEST_ARGS)

plan: $(INSTALL_STAMP) ## print the capacity plan for 60 devices on each node size
	$(VENV)/bin/voice-pipeline plan --compare --devices 60

calibrate: install ## re-measure the cost profile on this machine (writes operator/voice_operator/data/cost-profile.json)
	$(VENV)/bin/voice-pipeline calibrate --output operator/voice_operator/data/cost-profile.json

# A local one-node cluster whose Pods run (voice-pipeline cluster; services/voice_pipeline/devcluster).
.PHONY: cluster-up cluster-down cluster-packages e2e-closed-loop

cluster-up: install kube-bins cluster-packages docker-engine ## start a local one-node cluster (kubelet on the Docker engine) and print its KUBECONFIG
	$(VENV)/bin/voice-pipeline cluster up

cluster-down: $(INSTALL_STAMP) ## stop the local cluster started by cluster-up (its Pods, rules and processes)
	$(VENV)/bin/voice-pipeline cluster down

e2e-closed-loop: install kube-bins cluster-packages docker-engine images ## only the closed loop on running Pods (part of `make test`); keeps its timeline in bench/results/
	VP_E2E_RESULTS=bench/results VP_E2E_REQUIRE_PODS=1 $(PY) -m pytest tests/e2e/test_closed_loop.py -s -q $(PYTEST_ARGS)
