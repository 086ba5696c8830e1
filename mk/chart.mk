# Helm chart and container images (charts/voice-pipeline, docker/). helm comes pinned and checksummed
# from scripts/kube-local.sh tools (`make kube-bins`, a prerequisite of `make test`).
.PHONY: images image-services image-operator chart-lint chart-docs chart-test

IMAGE_REGISTRY ?= ghcr.io/voice-pipeline
IMAGE_TAG ?= 0.1.0
SERVICES_IMAGE := $(IMAGE_REGISTRY)/services:$(IMAGE_TAG)
OPERATOR_IMAGE := $(IMAGE_REGISTRY)/operator:$(IMAGE_TAG)
# Offline models baked into the services image: default, none (mount them at /models) or a list.
MODELS ?= default
HELM := $(VP_HOME)/bin/helm

define need_docker
	@command -v docker >/dev/null 2>&1 || { echo "make images needs a Docker engine: the docker command is not installed (https://docs.docker.com/engine/install/)"; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make images needs a Docker engine: 'docker info' got no answer (start dockerd, or set DOCKER_HOST)"; exit 1; }
endef

images: image-services image-operator ## build the services and operator images (needs a Docker engine)

image-services: ## the services image (all stages; models baked in unless MODELS=none)
	$(need_docker)
	DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile.services --build-arg MODELS="$(MODELS)" -t $(SERVICES_IMAGE) .

image-operator: ## the operator image (no model runtimes)
	$(need_docker)
	DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile.operator -t $(OPERATOR_IMAGE) .

chart-lint: $(VP_HOME)/bin/helm-3.17.2 ## helm lint the chart with every ci/ scenario
	@for f in charts/voice-pipeline/ci/*-values.yaml; do echo ">> helm lint -f $$f"; $(HELM) lint charts/voice-pipeline -f $$f --quiet || exit 1; done

chart-docs: $(INSTALL_STAMP) ## regenerate the chart README's values table from values.yaml
	$(PY) -m voice_pipeline.chart_docs

chart-test: install kube-bins ## chart tests: render/lint/schema/promtool, then install into the local API server
	$(PY) -m pytest tests/unit/test_chart_docs.py tests/unit/test_images.py tests/integration/test_chart.py tests/e2e/test_helm.py -q $(PYTEST_ARGS)
