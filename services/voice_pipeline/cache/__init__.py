"""Caches that make repeated work free: ASR by audio hash, LLM by question meaning, TTS by sentence.

Each cache is a decorator around a stage Protocol of common/stages.py, so the gateway cannot tell a
cached stage from a live one. Storage is Redis (shared by all replicas) or, in all-in-one mode
without a Redis URL, a bounded in-process store; a slow or absent Redis is bypassed, never waited
on (guard.py). Look-ups are counted in voice_cache_requests_total{stage,result}.

Modules: settings (CacheSettings), backend (interface + in-process store), redis_backend, guard
(deadline, breaker, one warning per outage), keys (pure keys and codecs), semantic (embedding model
and vector search), audio_caches (ASR, TTS), llm_cache (semantic replies), preload (common
questions), build (open the caches of a process and wrap its stages).
"""

from voice_pipeline.cache.settings import CacheSettings

__all__ = ["CacheSettings"]
