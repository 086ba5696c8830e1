# Helm chart (charts/voice-pipeline). helm comes pinned and checksummed from scripts/kube-local.sh
# tools (`make kube-bins`, a prerequisite of `make test`); the images it installs: mk/images.mk.
.PHONY: chart-lint chart-docs chart-test

HELM := $(VP_HOME)/bin/helm

chart-lint: $(VP_HOME)/bin/helm-3.17.2 ## helm lint the chart with every ci/ scenario
	@for f in charts/voice-pipeline/ci/*-values.yaml; do echo ">> helm lint -f $$f"; $(HELM) lint charts/voice-pipeline -f $$f --quiet || exit 1; done

chart-docs: $(INSTALL_STAMP) ## regenerate the chart README's values table from values.yaml
	$(PY) -m voice_pipeline.chart_docs

chart-test: install kube-bins ## chart tests: render/lint/schema/promtool, then install into the local API server
	$(PY) -m pytest tests/unit/test_chart_docs.py tests/unit/test_images.py tests/integration/test_chart.py tests/e2e/test_helm.py -q $(PYTEST_ARGS)
