# Browser pages served by the gateway (issue 16): the talk page and the status page. Their two npm
# packages (a libopus WebAssembly build for browsers without WebCodecs, uPlot for the charts) are
# installed once per lockfile into $(VP_HOME) and copied into the package data: the pages load
# nothing from a CDN. The browser tests drive Debian's chromium (installed here when root).
.PHONY: web-assets deps-chromium

WEB_DIR := services/voice_pipeline/web
WEB_VENDOR := $(WEB_DIR)/static/vendor
WEB_LOCK_KEY := $(shell cat $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json | sha256sum | cut -c1-12)
WEB_NPM := $(VP_HOME)/npm-$(WEB_LOCK_KEY)
WEB_STAMP := $(WEB_VENDOR)/.vendored-$(WEB_LOCK_KEY)

# `npm ci` in a copy outside the repo: node_modules never lands in the package tree.
$(WEB_NPM)/.done: $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing (Debian: apt-get install npm)"; exit 1; }
	@echo ">> npm ci (web assets) into $(WEB_NPM)"
	@rm -rf $(WEB_NPM) && mkdir -p $(WEB_NPM)
	cp $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json $(WEB_NPM)/
	cd $(WEB_NPM) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

$(WEB_STAMP): $(WEB_NPM)/.done
	@rm -rf $(WEB_VENDOR) && mkdir -p $(WEB_VENDOR)
	cp $(WEB_NPM)/node_modules/uplot/dist/uPlot.iife.min.js $(WEB_NPM)/node_modules/uplot/dist/uPlot.min.css $(WEB_VENDOR)/
	cp $(WEB_NPM)/node_modules/@evan/wasm/target/opus/deno.js $(WEB_VENDOR)/opus-wasm.mjs
	cp $(WEB_NPM)/node_modules/uplot/LICENSE $(WEB_VENDOR)/LICENSE.uplot
	cp $(WEB_NPM)/node_modules/@evan/wasm/LICENSE $(WEB_VENDOR)/LICENSE.evan-wasm
	@touch $@

web-assets: $(WEB_STAMP) ## vendor the browser pages' npm packages (libopus wasm, uPlot) into the package data

deps-chromium: ## Debian's chromium for the browser tests (when root; otherwise says what is missing)
	@if ! dpkg -s chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then echo ">> apt-get install chromium"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null || exit 1; \
	  else echo "missing Debian package: chromium (run as root or: sudo apt-get install chromium)"; exit 1; fi; fi

run: web-assets
test-prereqs:: web-assets deps-chromium
test-integration: web-assets deps-chromium
# The services image installs the project wheel, which carries the vendored files as package data.
image-services: web-assets
