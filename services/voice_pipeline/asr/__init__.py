"""The ASR stage: utterances from all sessions batched into one model call (`stage.InProcessAsr`
behind `common.batching`); back ends faster-whisper, SenseVoiceSmall (ONNX) or a remote
OpenAI-compatible transcriber (`engine.AsrEngine`).

A model stage: imports `common`, `contract` and `models` only; `assembly` builds it and
`stagehost` or `allinone` hosts it.
"""
