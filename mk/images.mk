# Container images (docker/): services, operator, and a Redis for clusters without a registry.
#
# `make images` starts a Docker engine when none answers (installing Debian's docker.io when root),
# then builds from a staging copy of the build context that carries the host's wheelhouse and
# verified models (docker/inputs/README.md): no compiler and no download inside the build, and a
# rebuild after a code change reuses every layer but the last ones.
.PHONY: images image-services image-operator image-redis docker-engine base-image wheelhouse

IMAGE_REGISTRY ?= ghcr.io/voice-pipeline
IMAGE_TAG ?= 0.1.0
SERVICES_IMAGE := $(IMAGE_REGISTRY)/services:$(IMAGE_TAG)
OPERATOR_IMAGE := $(IMAGE_REGISTRY)/operator:$(IMAGE_TAG)
REDIS_IMAGE := $(IMAGE_REGISTRY)/redis:$(IMAGE_TAG)
# Offline models baked into the services image: default, none (mount them at /models) or a list.
MODELS ?= default
# What the images start FROM. `debian` (default): a bookworm base made here by debootstrap from the
# machine's own Debian mirror (scripts/base-image.sh), for machines that reach no container registry.
# Where a registry is reachable: BASE_IMAGE=python:3.11-slim-bookworm.
BASE_IMAGE ?= debian
DEBIAN_BASE := voice-pipeline/debian-base:bookworm
RESOLVED_BASE = $(if $(filter debian,$(BASE_IMAGE)),$(DEBIAN_BASE),$(BASE_IMAGE))

DEPS_KEY := $(shell cat pyproject.toml docker/wheelhouse_extras.py | sha256sum | cut -c1-12)
# Debian bookworm's python3.11 (the Debian base); a newer one (python:3.11-slim) needs no more wheels.
IMAGE_PYTHON := 3.11.2
WHEELHOUSE := $(VP_HOME)/wheelhouse
STAGING := $(VP_HOME)/image-context
DOCKER_BUILD := DOCKER_BUILDKIT=0 docker build --network host -q

docker-engine: ## a Docker engine (started when none answers; Debian's docker.io installed when root)
	@bash scripts/docker-engine.sh ensure >/dev/null

base-image: docker-engine
	@if [ "$(BASE_IMAGE)" = debian ]; then bash scripts/base-image.sh $(DEBIAN_BASE); fi

# Requirements whose markers hold for the image's Python but not the host's (docker/wheelhouse_extras.py).
define image_python_extras
	@extra=$$($(PY) docker/wheelhouse_extras.py $(1) $(IMAGE_PYTHON)); \
	if [ -n "$$extra" ]; then echo ">> wheels for Python $(IMAGE_PYTHON): $$extra"; $(PIP) wheel -q --find-links $(1) -w $(1) $$extra; fi
endef

# Every dependency as a wheel, per dependency set and pyproject.toml (the cache key).
$(WHEELHOUSE)/services-$(DEPS_KEY)/.done: $(LLAMA_WHEEL_STAMP) | $(VENV)/bin/python
	@echo ">> wheelhouse of the services image (once per pyproject.toml)"
	@rm -rf $(@D) && mkdir -p $(@D)
	$(PIP) wheel -q --find-links $(WHEELS) -w $(@D) ".[services,sensevoice]"
	$(call image_python_extras,$(@D))
	@rm -f $(@D)/voice_pipeline-*.whl && touch $@

$(WHEELHOUSE)/operator-$(DEPS_KEY)/.done: | $(VENV)/bin/python
	@echo ">> wheelhouse of the operator image (once per pyproject.toml)"
	@rm -rf $(@D) && mkdir -p $(@D)
	$(PIP) wheel -q -w $(@D) ".[operator]"
	$(call image_python_extras,$(@D))
	@rm -f $(@D)/voice_pipeline-*.whl && touch $@

wheelhouse: $(WHEELHOUSE)/services-$(DEPS_KEY)/.done $(WHEELHOUSE)/operator-$(DEPS_KEY)/.done

# stage_context NAME WHEELSET WITH_MODELS: the build context of one image in $(STAGING)/NAME
# (hard links, so staging 1 GB of models costs nothing).
define stage_context
	@rm -rf $(STAGING)/$(1) && mkdir -p $(STAGING)/$(1)/docker/inputs/project
	@cp pyproject.toml README.md $(STAGING)/$(1)/
	@rsync -a --exclude __pycache__ --exclude '*.pyc' --exclude '*.egg-info' services operator $(STAGING)/$(1)/
	@cp docker/install-system.sh $(STAGING)/$(1)/docker/
	@cp docker/inputs/README.md $(STAGING)/$(1)/docker/inputs/
	$(if $(2),@cp -al $(WHEELHOUSE)/$(2)-$(DEPS_KEY) $(STAGING)/$(1)/docker/inputs/wheels && rm -f $(STAGING)/$(1)/docker/inputs/wheels/.done)
	$(if $(2),@$(PIP) wheel -q --no-deps -w $(STAGING)/$(1)/docker/inputs/project . >/dev/null)
	$(if $(3),@if [ "$(MODELS)" = default ]; then mkdir -p $(STAGING)/$(1)/docker/inputs/models && for m in $$($(PY) -c 'from voice_pipeline.models.registry import DEFAULT_SET; print(*DEFAULT_SET)'); do cp -al $(VP_HOME)/models/$$m $(STAGING)/$(1)/docker/inputs/models/; done; fi)
endef

image-services: base-image wheelhouse models ## the services image (all stages; models baked in unless MODELS=none)
	$(call stage_context,services,services,models)
	@echo ">> docker build $(SERVICES_IMAGE) (FROM $(RESOLVED_BASE))"
	$(DOCKER_BUILD) -f docker/Dockerfile.services --build-arg BASE_IMAGE=$(RESOLVED_BASE) \
	  --build-arg MODELS="$(MODELS)" -t $(SERVICES_IMAGE) $(STAGING)/services >/dev/null

image-operator: base-image wheelhouse ## the operator image (no model runtimes)
	$(call stage_context,operator,operator,)
	@echo ">> docker build $(OPERATOR_IMAGE) (FROM $(RESOLVED_BASE))"
	$(DOCKER_BUILD) -f docker/Dockerfile.operator --build-arg BASE_IMAGE=$(RESOLVED_BASE) \
	  -t $(OPERATOR_IMAGE) $(STAGING)/operator >/dev/null

image-redis: base-image ## Redis from Debian's redis-server (for clusters that cannot pull redis:7.2-alpine)
	@mkdir -p $(STAGING)/redis
	@echo ">> docker build $(REDIS_IMAGE) (FROM $(RESOLVED_BASE))"
	$(DOCKER_BUILD) -f docker/Dockerfile.redis --build-arg BASE_IMAGE=$(RESOLVED_BASE) \
	  -t $(REDIS_IMAGE) $(STAGING)/redis >/dev/null

images: image-services image-operator image-redis ## build the services, operator and Redis images (starts a Docker engine if needed)
	@docker images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -F "$(IMAGE_REGISTRY)/" | sort
