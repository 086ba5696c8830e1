# SenseVoiceSmall's cost without its weights (issue 12): FunASR's own model code builds the public
# architecture with random weights and its exporter writes the ONNX files funasr-onnx loads (fp32 and
# int8). Cost real, transcripts meaningless. NOT part of `make test`: torch is a large install and
# the export takes minutes. Cached under $(VP_HOME), keyed by the versions that shape the graph.
.PHONY: sensevoice-random calibrate-sensevoice

SV_TORCH_VERSION := 2.13.0
SV_FUNASR_VERSION := 1.4.16
SV_VENV := $(VP_HOME)/sensevoice-export-venv
SV_VENV_STAMP := $(SV_VENV)/.installed-torch$(SV_TORCH_VERSION)-funasr$(SV_FUNASR_VERSION)
SV_RANDOM_DIR := $(VP_HOME)/models/sensevoice-small-random-funasr$(SV_FUNASR_VERSION)

# Its own venv: torch and funasr stay out of the project's.
$(SV_VENV_STAMP):
	$(PYTHON) -m venv $(SV_VENV)
	$(SV_VENV)/bin/pip install -q torch==$(SV_TORCH_VERSION) funasr==$(SV_FUNASR_VERSION) onnx sentencepiece \
	  onnxruntime==1.31.1 "numpy<=1.26.4"
	@touch $@

$(SV_RANDOM_DIR)/model_quant.onnx: $(SV_VENV_STAMP)
	$(SV_VENV)/bin/python scripts/sensevoice_random_export.py $(SV_RANDOM_DIR)

sensevoice-random: $(SV_RANDOM_DIR)/model_quant.onnx ## SenseVoiceSmall architecture, random weights -> $VP_HOME/models (cost real, text meaningless)

calibrate-sensevoice: sensevoice-random $(INSTALL_STAMP) ## measure asr:sensevoice (int8, the service default) into the shipped cost profile
	VP_ASR__SENSEVOICE_DIR=$(SV_RANDOM_DIR) $(VENV)/bin/voice-pipeline calibrate --only asr:sensevoice \
	  --output operator/voice_operator/data/cost-profile.json
