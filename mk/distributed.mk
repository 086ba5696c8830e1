# Distributed mode on one machine: every stage its own process, as on Kubernetes (see README).
.PHONY: run-distributed

DIST_HOST ?= 127.0.0.1

run-distributed: install ## each stage its own process (vad :9001, asr :9002, llm :9003, tts :9004) + gateway :8000
	@pids=""; trap 'kill $$pids 2>/dev/null; wait' EXIT; \
	for s in vad:9001 asr:9002 llm:9003 tts:9004; do \
	  VP_SERVICE__HOST=$(DIST_HOST) VP_SERVICE__PORT=$${s#*:} $(VENV)/bin/voice-pipeline serve $${s%%:*} & pids="$$pids $$!"; \
	done; \
	VP_STAGES__VAD_URL=http://$(DIST_HOST):9001 VP_STAGES__ASR_URL=http://$(DIST_HOST):9002 \
	VP_STAGES__LLM_URL=http://$(DIST_HOST):9003 VP_STAGES__TTS_URL=http://$(DIST_HOST):9004 \
	  $(VENV)/bin/voice-pipeline serve gateway
