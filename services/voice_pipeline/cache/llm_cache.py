"""`LlmStage` with a semantic cache of first-turn replies.

Only a request without earlier turns (system prompt + one user message) is looked up or stored: a
reply that depends on history must not be served to someone with another history. A hit replays
the deltas the provider once streamed, so the gateway's sentence splitter cuts the same sentences
(and finds their audio in the TTS cache). A miss streams the provider's reply through and stores it
only when the stream completed: a cancelled (barge-in), failed or empty reply is never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable

from voice_pipeline.cache import keys
from voice_pipeline.cache.guard import CacheUnavailable, GuardedBackend
from voice_pipeline.cache.semantic import Embedder, Vector, VectorMirrors, encode_entry, normalize_question
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import ChatMessage, LlmStage

log = logging.getLogger(__name__)

STAGE = "llm"


def cacheable_question(messages: list[ChatMessage]) -> tuple[str, str] | None:
    """(system prompt, question) when the request has no earlier turns, else None."""
    if len(messages) == 2 and messages[0].role == "system" and messages[1].role == "user":
        question = normalize_question(messages[1].content)
        return (messages[0].content, question) if question else None
    if len(messages) == 1 and messages[0].role == "user":
        question = normalize_question(messages[0].content)
        return ("", question) if question else None
    return None


class SemanticReplies:
    """Look-up and store of replies by question similarity (see semantic.py for the design)."""

    def __init__(
        self,
        guard: GuardedBackend,
        embedder: Embedder,
        prefix: str,
        threshold: float,
        ttl_s: float,
        index_size: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.guard = guard
        self.embedder = embedder
        self.prefix = prefix
        self.threshold = threshold
        self.ttl_s = ttl_s
        self.index_size = index_size
        self._clock = clock
        self.mirrors = VectorMirrors(embedder.dim, index_size)
        self._embed_failed = False  # warned once

    async def lookup(self, namespace: str, question: str) -> tuple[list[str] | None, Vector]:
        """The cached reply deltas of the nearest earlier question at or above the threshold (or
        None), and this question's vector (to store the reply under after a miss). Raises
        CacheUnavailable."""
        self.guard.check()  # Redis known down: skip the embedding too
        try:
            vector = await self.embedder.embed(question)
        except Exception as exc:  # the model failing must not fail the request
            if not self._embed_failed:
                log.warning("question embedding failed (%s): semantic cache skipped", exc)
                self._embed_failed = True
            raise CacheUnavailable("error", f"embedding failed: {exc}") from exc
        await self._sync(namespace)
        best = self.mirrors.get(namespace).best(vector, self._clock())
        if best is None or best[1] < self.threshold:
            return None, vector
        entry_id, score = best
        key = keys.llm_reply_key(self.prefix, namespace, entry_id)
        data = await self.guard.call(lambda: self.guard.backend.get(key), "get")
        if data is None:
            return None, vector
        try:
            cached_question, deltas = keys.decode_reply(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable cached reply %s (%s): treated as a miss", key, exc)
            return None, vector
        log.debug("semantic hit %.3f: %r ~ %r", score, question[:60], cached_question[:60])
        return deltas, vector

    async def store(self, namespace: str, question: str, vector: Vector, deltas: list[str]) -> None:
        entry_id = secrets.token_hex(16)
        expires_at = self._clock() + self.ttl_s
        backend = self.guard.backend
        reply_key = keys.llm_reply_key(self.prefix, namespace, entry_id)
        log_key = keys.llm_log_key(self.prefix, namespace)
        await self.guard.call(lambda: backend.set(reply_key, keys.encode_reply(question, deltas), self.ttl_s))
        entry = encode_entry(entry_id, expires_at, vector)
        await self.guard.call(lambda: backend.append(log_key, entry, self.index_size, self.ttl_s))

    async def _sync(self, namespace: str) -> None:
        index = self.mirrors.get(namespace)
        log_key = keys.llm_log_key(self.prefix, namespace)
        backend = self.guard.backend
        cursor, raw = await self.guard.call(
            lambda: backend.read_since(log_key, index.cursor, self.index_size), "read"
        )
        self.mirrors.ingest(namespace, cursor, raw, lambda why: log.debug("skipped vector: %s", why))


class CachedLlm:
    """Implements common.stages.LlmStage around `inner`."""

    def __init__(self, inner: LlmStage, replies: SemanticReplies, metrics: Metrics, model: str) -> None:
        self.inner = inner
        self.replies = replies
        self.metrics = metrics
        self.model = model
        self.active = 0  # user requests in flight; the preload gives way to them (preload.py)
        self.idle = asyncio.Event()  # set while none is
        self.idle.set()
        self.busy = asyncio.Event()  # set while some is

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        self.active += 1
        self.idle.clear()
        self.busy.set()
        try:
            async for delta in self._stream_chat(messages):
                yield delta
        finally:
            self.active -= 1
            if not self.active:
                self.idle.set()
                self.busy.clear()

    async def _stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        found = cacheable_question(messages)
        if found is None:
            async for delta in self.inner.stream_chat(messages):
                yield delta
            return
        system, question = found
        namespace = keys.llm_namespace(self.model, system)
        cached: list[str] | None = None
        vector: Vector | None = None
        try:
            cached, vector = await self.replies.lookup(namespace, question)
            self.metrics.cache.labels(STAGE, "hit" if cached is not None else "miss").inc()
        except CacheUnavailable as exc:
            self.metrics.cache.labels(STAGE, exc.result).inc()
        if cached is not None:
            for delta in cached:
                yield delta
            return
        parts: list[str] = []
        async for delta in self.inner.stream_chat(messages):
            parts.append(delta)
            yield delta
        # Reached only when the provider finished: cancellation and errors leave before this line.
        if vector is not None and "".join(parts).strip():
            await self._store(namespace, question, vector, parts)

    async def _store(self, namespace: str, question: str, vector: Vector, deltas: list[str]) -> None:
        with contextlib.suppress(CacheUnavailable):  # the guard warned once; reply delivered
            await self.replies.store(namespace, question, vector, deltas)

    async def warm(self, messages: list[ChatMessage]) -> list[str] | None:
        """Answer `messages` into the cache unless a close question is already there (start-up
        preload; counts no look-ups, since no user asked). Returns the reply deltas, or None if the
        cache is unavailable, the request is not cacheable or the reply was empty."""
        found = cacheable_question(messages)
        if found is None:
            return None
        system, question = found
        namespace = keys.llm_namespace(self.model, system)
        try:
            cached, vector = await self.replies.lookup(namespace, question)
        except CacheUnavailable:
            return None
        if cached is not None:
            return cached
        deltas = [delta async for delta in self.inner.stream_chat(messages)]
        if not "".join(deltas).strip():
            return None
        await self._store(namespace, question, vector, deltas)
        return deltas
