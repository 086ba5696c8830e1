# Caches (issue 3 item 4): hit vs miss latency of the ASR, LLM (semantic) and TTS caches on the real
# engines and a real redis-server. Not part of `make test` (it measures; tests never assert timings).
.PHONY: cache-latency

CACHE_LATENCY_ARGS ?= --runs 8

cache-latency: install ## hit vs miss latency of each cache (real engines, a real redis-server; CACHE_LATENCY_ARGS='--backend memory')
	$(PY) scripts/cache_latency.py $(CACHE_LATENCY_ARGS)
