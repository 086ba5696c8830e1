"""The VAD stage: Silero VAD (onnxruntime), every session's audio advanced in one batched model
call (`stage.InProcessVad` behind `common.batching`), with a pure segmenter per session.

A model stage: imports `common`, `contract` and `models` only; `assembly` builds it and
`stagehost` or `allinone` hosts it.
"""
