"""The TTS stage: text cleaning, the engine router (failover, `common.breaker` per engine),
resampling and Opus framing at the requested rate, behind the stage's admission
(`stage.InProcessTts`). Engines: Edge, Azure, iFlytek, OpenAI-compatible speech, Piper, espeak-ng.

A model stage: imports `common`, `contract` and `models` only.
"""
