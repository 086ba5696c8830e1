"""The LLM stage: the provider router (choice by latency, failover before the first token,
`common.breaker` per provider) behind the stage's admission (`stage.InProcessLlm`); providers are
OpenAI-compatible and Anthropic HTTP clients, or a local llama.cpp server it starts.

A model stage: imports `common`, `contract` and `models` only. What the conversation sends it
(history, prompts) is `turn`'s; `settings.HistorySettings` is the part of the `llm` section the
conversation reads.
"""
