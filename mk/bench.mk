# Capacity benchmarks (issue 7): `make bench` is NOT part of `make test` (it takes tens of minutes).
.PHONY: bench bench-asr bench-deps bench-docs bench-embedded report soak

BENCH_STAMP := $(VENV)/.bench-deps-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
# Extra arguments for the search, e.g. BENCH_ARGS='--duration 120 --note "idle machine"'.
BENCH_ARGS ?=
BENCH_MODES ?= --mode allinone --mode distributed

$(BENCH_STAMP): $(INSTALL_STAMP)
	$(PIP) install -q --find-links $(WHEELS) -e ".[bench]"
	@rm -f $(VENV)/.bench-deps-*; touch $@

bench-deps: $(BENCH_STAMP) ## matplotlib and py-spy (the `bench` extra)

# The report test renders charts, so `make test` needs the extra too.
test-prereqs:: bench-deps

# The model check compares with the shipped cost profile and with one calibrated here first (the
# predictions are stored in each result, so the file is simply overwritten by the next run).
BENCH_PROFILE := bench/results/cost-profile-this-machine.json

bench: install bench-deps ## calibrate here, then find supported devices (all-in-one, distributed) -> bench/results, docs/benchmarks.md, docs/capacity-report.md
	@mkdir -p bench/results
	$(VENV)/bin/voice-pipeline calibrate --output $(BENCH_PROFILE)
	$(VENV)/bin/voice-pipeline bench $(BENCH_MODES) --profile $(BENCH_PROFILE) $(BENCH_ARGS)
	$(VENV)/bin/voice-pipeline report

bench-docs: bench-deps ## regenerate docs/benchmarks.md from bench/results without measuring
	$(VENV)/bin/voice-pipeline bench --docs-only

report: bench-deps ## the capacity report (docs/capacity-report.md) from the cost profile and bench/results
	$(VENV)/bin/voice-pipeline report

bench-embedded: install bench-deps ## the fully local (embedded) mode on its own: local llama.cpp, Piper / espeak-ng
	$(VENV)/bin/voice-pipeline bench --mode allinone --llm local --tts local --start 1 $(BENCH_ARGS)

# Leak hunting (issue 13), NOT part of `make test`: SOAK_ARGS='--devices 20 --duration 1800' by default.
SOAK_ARGS ?= --devices 20 --duration 1800 --interval 30

soak: install bench-deps ## 20 devices for 30 min with emulated providers: RSS/fds/threads/p95 every 30 s -> bench/results/soak-*.json (+ .png)
	@mkdir -p bench/results
	$(VENV)/bin/voice-pipeline soak $(SOAK_ARGS)

# ASR accuracy and cost (issue 14), NOT part of `make test`: the test set is built once into
# $VP_HOME/asr-testset; both decodings over ~190 utterances take ~5 CPU minutes.
BENCH_ASR_ARGS ?=

bench-asr: install bench-deps ## WER/CER + CPU per utterance (default vs reference decoding), bad audio, VAD endpointing -> bench/results, docs/benchmarks.md
	@mkdir -p bench/results
	$(VENV)/bin/voice-pipeline bench-asr $(BENCH_ASR_ARGS)
