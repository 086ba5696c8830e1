"""What every stage and process shares; imports nothing of the pipeline but `contract`.

- `stages`: the one interface of each stage (VadStage, AsrStage, LlmStage, TtsStage) and the data
  crossing it; the gateway talks to these only, whatever carries them.
- `admission`: the one admission controller (slots, bounded wait, the stage metrics);
  `batching`: MicroBatcher, dynamic batching behind it (VAD, ASR); `breaker`: the one circuit
  breaker (LLM providers, TTS engines, cache backends); `http`: the pooled client of HTTP providers.
- `audio`, `opus`: PCM helpers, the Opus codec and the rates/frame lengths it accepts.
- `settings`, `metrics`, `errors`, `secrets`, `logs`, `paths`, `activity`: process plumbing.
"""
