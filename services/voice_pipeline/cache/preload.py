"""Warm the caches with the answers to common questions, in the background at start-up.

The reference server keeps canned replies for frequent questions; here the frequent questions are
asked of the real LLM once, and the reply (and, in a process that also has the TTS stage, its
sentences' audio) lands in the same caches a live turn uses. The messages and sentences are built
exactly as the gateway builds them, so a user asking one of these gets hits all the way through.

Devices come first: one step (an answer, or one sentence's audio) at a time, started only once
no device session has been open for `quiet_s` (`SessionActivity`, where the process has a
gateway; start-up counts as activity) and no request waits for the LLM, and abandoned the moment
either changes (a local llama.cpp server generates one reply at a time, and on a small box the
preload's CPU would also slow the device's VAD and ASR). The quiet period is there because work a
model has started (a prompt being evaluated, a sentence synthesized in a thread) cannot be taken
back when a device arrives. An abandoned step stores nothing and is tried again once everything is
quiet. The first provider
error stops the preload: live traffic fills the caches anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from voice_pipeline.cache.audio_caches import CachedTts
from voice_pipeline.cache.llm_cache import CachedLlm
from voice_pipeline.common.activity import SessionActivity
from voice_pipeline.common.errors import ConfigError, VoicePipelineError
from voice_pipeline.common.stages import ChatMessage, SpeechRequest
from voice_pipeline.turn.history import ChatHistory
from voice_pipeline.turn.sentences import SentenceSplitter

log = logging.getLogger(__name__)
T = TypeVar("T")


def load_questions(path: str = "") -> dict[str, list[str]]:
    """{language: [question]} from a YAML file; empty path = the shipped list."""
    try:
        if path:
            text = Path(path).read_text(encoding="utf-8")
        else:
            text = resources.files("voice_pipeline").joinpath("data/common_questions.yaml").read_text("utf-8")
        data = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"cannot read the common-questions file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"common-questions file {path or '(shipped)'} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(q, str) for q in v)
        for k, v in data.items()
    ):
        raise ConfigError(
            f"common-questions file {path or '(shipped)'} must map a language to a list of questions, "
            "e.g. {en: [What can you do?], zh: [你能做什么？]}"
        )
    return {lang: [q.strip() for q in qs if q.strip()] for lang, qs in data.items()}


def reply_sentences(deltas: list[str]) -> list[str]:
    """The sentences the gateway sends to TTS when the cache replays these deltas."""
    splitter = SentenceSplitter()
    sentences: list[str] = []
    for delta in deltas:
        sentences += splitter.push(delta)
    return sentences + splitter.flush()


@dataclass(frozen=True)
class SpeechFormat:
    sample_rate: int
    frame_ms: int


@dataclass
class PreloadReport:
    answered: int = 0
    sentences: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def _quiet(llm: CachedLlm, activity: SessionActivity | None, quiet_s: float = 0.0) -> None:
    """Wait until no LLM request is in flight and no device session has been open for `quiet_s`."""
    while True:
        if activity is not None and not activity.quiet.is_set():
            await activity.quiet.wait()
        elif not llm.idle.is_set():
            await llm.idle.wait()
        elif activity is not None and activity.quiet_for() < quiet_s:
            await asyncio.sleep(quiet_s - activity.quiet_for())
        else:
            return


async def _giving_way(
    make: Callable[[], Coroutine[Any, Any, T]],
    llm: CachedLlm,
    activity: SessionActivity | None,
    quiet_s: float = 0.0,
) -> T | None:
    """`make()` run while all is quiet; cancelled and started again once it is quiet again
    whenever a user request or a device session arrives. None if it was abandoned for good."""
    while True:
        await _quiet(llm, activity, quiet_s)
        work: asyncio.Task[T] = asyncio.create_task(make())
        interrupts = [asyncio.create_task(llm.busy.wait())]
        if activity is not None:
            interrupts.append(asyncio.create_task(activity.active.wait()))
        try:
            await asyncio.wait({work, *interrupts}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for interrupt in interrupts:
                interrupt.cancel()
            if not work.done():
                work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError  # the preload itself was stopped while waiting above
        if not work.cancelled():
            return work.result()


async def _warm_giving_way(
    llm: CachedLlm, messages: list[ChatMessage], activity: SessionActivity | None = None, quiet_s: float = 0.0
) -> list[str] | None:
    """`llm.warm(messages)`, cancelled and retried later whenever a device needs the machine."""
    return await _giving_way(lambda: llm.warm(messages), llm, activity, quiet_s)


async def preload(
    questions: dict[str, list[str]],
    system_prompts: dict[str, str],
    llm: CachedLlm,
    tts: CachedTts | None = None,
    speech: SpeechFormat | None = None,
    activity: SessionActivity | None = None,
    quiet_s: float = 0.0,
) -> PreloadReport:
    report = PreloadReport()
    started = time.monotonic()
    history = ChatHistory(system_prompts)
    pending = [(language, question) for language, items in questions.items() for question in items]
    while pending:
        language, question = pending[0]
        if not llm.replies.guard.healthy:
            log.info("cache preload stopped: the cache is unavailable")
            break
        try:
            deltas = await _warm_giving_way(llm, history.messages(question, language), activity, quiet_s)
            if deltas is not None and tts is not None and speech is not None:
                for sentence in reply_sentences(deltas):
                    request = SpeechRequest(sentence, language, speech.sample_rate, speech.frame_ms)
                    await _giving_way(partial(tts.warm, request), llm, activity, quiet_s)
                    report.sentences += 1
        except VoicePipelineError as exc:  # a failing provider: don't keep asking it
            log.warning("cache preload stopped at %r: %s", question, exc)
            break
        pending.pop(0)
        if deltas is None:
            report.failed.append(question)
        else:
            report.answered += 1
    report.failed += [question for _, question in pending]
    report.seconds = time.monotonic() - started
    log.info(
        "cache preload: %d common questions answered (%d sentences of audio), %d skipped, in %.1f s",
        report.answered,
        report.sentences,
        len(report.failed),
        report.seconds,
    )
    return report
