"""One device's conversation: audio in, turns out.

`Conversation` owns a session's audio buffer, its VAD stream and its reply pipeline. A reply runs
as three tasks joined by queues (sentences bounded; audio packets not, see `_pipeline`), so each
stage starts as soon as it has input:

    LLM deltas -> sentences -> [sentence_q] -> TTS -> Opus packets -> [audio_q] -> paced sender

The first sentence reaches TTS while the LLM is still writing the second, and the next sentence is
synthesized while the current one plays. Barge-in (`abort`) cancels all three at once and sends
`tts stop`; no frame leaves after that.

A turn the VAD ends is only held, not cut, until its reply starts playing (`tts start` goes with the
first audio frame): the device keeps its microphone open until then, and speech that resumes in
that time takes the end back. The reply is cancelled and the speech joins the same turn, so a
pause the VAD took for the end costs a wasted request, never the rest of the sentence. That is
what lets the end-of-turn silence be short (vad/settings.py). Near capacity, where a wasted
transcription delays other turns, the turn is transcribed only after `busy_end_extra_ms` more
silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voice_pipeline.common.audio import Int16Array, int16_to_float, last_voiced_int16, last_voiced_sample
from voice_pipeline.common.errors import OverloadedError, VoicePipelineError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import (
    VAD_SAMPLE_RATE,
    AsrStage,
    Language,
    LlmStage,
    SpeechRequest,
    Transcript,
    TtsStage,
    VadStage,
)
from voice_pipeline.gateway import protocol as proto
from voice_pipeline.gateway.early import AsrLoad, EarlyTurn, EarlyWork, ReplyPrefetch, TimedDelta, timed
from voice_pipeline.gateway.pacing import PlaybackClock
from voice_pipeline.gateway.settings import GatewaySettings
from voice_pipeline.turn.emotion import emotion_for
from voice_pipeline.turn.history import ChatHistory
from voice_pipeline.turn.sentences import SentenceSplitter, join_sentences
from voice_pipeline.turn.timeline import TurnTimes

log = logging.getLogger(__name__)

_END = object()  # queue sentinel: the producer is done
# Spoken when the language model cannot take the turn (error `overloaded` from the llm stage).
BUSY_REPLY = {
    "en": "Sorry, I'm busy right now. Please ask me again in a moment.",
    "zh": "抱歉，我现在有点忙，请稍后再问我。",
}
BUSY_REPLY_TIMEOUT_S = 10.0
VAD_COMPLAINT_INTERVAL_S = 2.0  # at most one VAD error message per session in this interval
VOICE_END_SEARCH_S = 3.0  # how far back from an utterance's end to look for its last voiced frame


class Outbound(Protocol):
    """What a conversation may do to its device: send JSON, send one Opus packet, close."""

    async def send_json(self, message: dict[str, Any]) -> None: ...

    async def send_audio(self, packet: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass
class Opening:
    """How a reply starts playing: `tts start` and its face (`llm` emotion) go out with the first
    audio, not before, so the turn stays open to more speech while the reply is prepared."""

    emotion: str | None = None
    done: bool = False


@dataclass
class HeldTurn:
    """A turn the VAD ended whose reply has not started playing: the buffer keeps its audio up to
    `end` (absolute sample), so speech that resumes joins it (`Conversation._resume_turn`)."""

    end: int
    at: float  # when the VAD ended it (monotonic): a reply plays no sooner than `hold_min_ms` after
    # While ASR is busy: the sample count (`_fed`) at which it is transcribed, if no speech comes
    # first (`busy_end_extra_ms`). None: transcribed (or being transcribed) already.
    due: int | None = None


@dataclass
class Stages:
    vad: VadStage
    asr: AsrStage
    llm: LlmStage
    tts: TtsStage
    asr_load: AsrLoad = field(default_factory=AsrLoad)  # shared by the sessions of one gateway


@dataclass
class UtteranceBuffer:
    """Audio since listen start, trimmed to the pre-roll while nobody speaks.

    The VAD reports a speech start a few windows after it happened (it votes over 5 windows), so
    while silent the buffer keeps `preroll + slack` samples: enough to reach back past the start.
    """

    preroll: int
    slack: int = 8000  # 0.5 s at 16 kHz, well past the VAD's decision delay
    base: int = 0  # absolute sample index of chunks[0][0]
    chunks: list[Int16Array] = field(default_factory=list)
    size: int = 0
    speech_start: int | None = None
    voice_end: int = 0  # absolute sample where the latest voiced 10 ms frame (common.audio) ended

    def append(self, pcm: Int16Array) -> None:
        voiced = last_voiced_int16(pcm)
        if voiced:
            self.voice_end = self.end + voiced
        self.chunks.append(pcm)
        self.size += len(pcm)
        if self.speech_start is None:
            self._trim_to(self.base + self.size - self.preroll - self.slack)

    def mark_start(self, sample: int) -> None:
        self.speech_start = max(self.base, sample - self.preroll)

    def _joined(self) -> tuple[Int16Array, int]:
        """The buffered audio in one array, and where the utterance starts in it."""
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return audio, (self.speech_start if self.speech_start is not None else self.base) - self.base

    def cut(self, end: int | None = None) -> Int16Array:
        """Take the utterance [speech start, end) and keep what follows it."""
        audio, start = self._joined()
        stop = len(audio) if end is None else max(start, min(len(audio), end - self.base))
        utterance = audio[start:stop]
        rest = audio[stop:]
        self.base += stop
        self.chunks = [rest] if len(rest) else []
        self.size = len(rest)
        self.speech_start = None
        return utterance

    def peek(self) -> Int16Array:
        """The utterance so far, [speech start, now), left in place."""
        audio, start = self._joined()
        return audio[start:]

    @property
    def end(self) -> int:
        """Absolute sample just past the buffered audio."""
        return self.base + self.size

    def quiet_samples(self) -> int:
        """Quiet audio since the utterance's last voiced frame (0 if none was voiced yet)."""
        if self.speech_start is None or self.voice_end <= self.speech_start:
            return 0
        return self.end - self.voice_end

    def speech_samples(self) -> int:
        return 0 if self.speech_start is None else self.end - self.speech_start

    def clear(self) -> None:
        self.base += self.size
        self.chunks, self.size, self.speech_start = [], 0, None

    def _trim_to(self, keep_from: int) -> None:
        while self.chunks and self.base + len(self.chunks[0]) <= keep_from:
            self.base += len(self.chunks[0])
            self.size -= len(self.chunks[0])
            self.chunks.pop(0)


class Conversation:
    def __init__(
        self,
        session_id: str,
        out: Outbound,
        stages: Stages,
        settings: GatewaySettings,
        metrics: Metrics,
        history: ChatHistory,
        on_activity: Callable[[], None] = lambda: None,
        device_language: str = "",
    ) -> None:
        self.session_id = session_id
        self.out = out
        self.stages = stages
        self.settings = settings
        self.metrics = metrics
        self.history = history
        self.mode = "auto"
        self.listening = False
        self.speaking = False
        self._on_activity = on_activity
        self._buffer = UtteranceBuffer(preroll=settings.preroll_ms * VAD_SAMPLE_RATE // 1000)
        self._fed = 0  # samples fed to the VAD since open
        self._chunk_at = 0.0  # when the latest uplink chunk arrived (monotonic)
        self._reply: asyncio.Task[None] | None = None
        # Early transcription and reply (gateway.early), begun at the latest pause. The turn's end
        # uses them if its silence began at the same sample.
        self._early: EarlyTurn | None = None
        self._dropped_early: EarlyWork | None = None  # the latest dropped, maybe still unwinding
        self._held: HeldTurn | None = None
        self._language: Language = self._parse_language(settings.language)
        # The device's own language (auth.DeviceIdentity.language): what ASR falls back to when it
        # cannot tell. (Typed text keeps `auto`: its script, not the device, says its language.)
        self._device_language = device_language
        self.last_turn: TurnTimes | None = None
        self._last_vad_complaint = -VAD_COMPLAINT_INTERVAL_S
        self._vad_open = False
        self._last_vad_open_try = -VAD_COMPLAINT_INTERVAL_S

    @staticmethod
    def _parse_language(value: str) -> Language:
        return value if value in ("zh", "en") else "auto"  # type: ignore[return-value]

    async def open(self) -> None:
        """Open the session's VAD stream. A VAD stage that is down does not end the session: the
        device is told (`vad_failed`) and the stream is opened again at a later listen turn."""
        await self._ensure_vad_open()

    async def _ensure_vad_open(self) -> bool:
        if self._vad_open:
            return True
        now = time.monotonic()
        if now - self._last_vad_open_try < VAD_COMPLAINT_INTERVAL_S:
            return False  # audio arrives every 60 ms: do not hammer a stage that is down
        self._last_vad_open_try = now
        try:
            await self.stages.vad.open(self.session_id)
        except VoicePipelineError as exc:
            await self._vad_trouble(exc)
            return False
        self._vad_open = True
        return True

    async def close(self) -> None:
        self._drop_early()
        await self.cancel_reply(send_stop=False)
        if self._vad_open:
            with contextlib.suppress(Exception):
                await self.stages.vad.close(self.session_id)

    # --- device messages ----------------------------------------------------------------------
    async def listen_start(self, mode: str) -> None:
        self.mode = mode
        self.listening = True
        self._drop_early()
        self._held = None
        self._buffer.clear()
        if mode == "manual":
            # Push-to-talk: the button, not the VAD, says when speech starts. Without a marked
            # start the buffer would keep trimming itself to the pre-roll while the user talks.
            self._buffer.speech_start = self._buffer.base
            return
        if not await self._ensure_vad_open():
            return
        try:
            await self.stages.vad.reset(self.session_id)
        except VoicePipelineError as exc:
            await self._vad_trouble(exc)

    async def listen_stop(self) -> None:
        """Push-to-talk release: transcribe what was buffered (manual mode)."""
        self.listening = False
        if self.mode == "manual" and self._buffer.size:
            if self._buffer.speech_start is None:
                self._buffer.speech_start = self._buffer.base
            await self._end_of_speech(self._buffer.cut())

    async def detect(self, text: str) -> None:
        """Wake word or typed text from the device: answer it like a transcript."""
        if text.strip():
            await self._start_reply(text.strip(), TurnTimes(speech_end=time.monotonic()), send_stt=True)

    async def abort(self, reason: str = "") -> None:
        log.info("session %s: abort (%s)", self.session_id, reason or "button")
        await self.cancel_reply(send_stop=True)

    async def audio(self, pcm: Int16Array) -> None:
        """Uplink audio, already decoded to 16 kHz mono."""
        self._chunk_at = time.monotonic()
        if not self.listening and self.mode != "realtime":
            return  # mic closed (speaking or idle): drop, as the reference server does
        if self.speaking and self.mode != "realtime":
            return
        if self.mode == "manual":
            if self._buffer.speech_start is None:
                self._buffer.speech_start = self._buffer.base  # audio after a cut is speech too
            self._buffer.append(pcm)
            self._fed += len(pcm)
            if self._buffer.speech_samples() > self.settings.max_utterance_s * VAD_SAMPLE_RATE:
                await self._end_of_speech(self._buffer.cut())  # a held button must not grow memory
            return
        if not await self._ensure_vad_open():
            return
        try:
            events = await self.stages.vad.feed(self.session_id, pcm)
        except VoicePipelineError as exc:
            # Drop the chunk from the buffer too, so VAD sample numbers keep matching it.
            await self._vad_trouble(exc)
            return
        self._buffer.append(pcm)
        self._fed += len(pcm)
        for event in events:
            if event.kind == "speech_start":
                self._on_activity()
                if self._held is not None and self._held.due is not None:
                    self._held = None  # not transcribed yet: nothing to undo
                elif self._held is not None:
                    await self._resume_turn()  # the turn's start stays where it was
                else:
                    self._buffer.mark_start(event.sample)
                if self.speaking and self.mode == "realtime":
                    await self.abort("voice during playback")
            elif event.kind == "speech_pause" and self._buffer.speech_start is not None:
                # The pause names the sample its end would: start again unless the run the quiet
                # began would hold a turn ending here (the end asks the same question). Else a
                # word the VAD heard in the quiet (a soft tail) left the whole ASR to the end.
                if not self._early_holds(event.sample):
                    self._start_early()
            elif event.kind == "speech_end" and self._buffer.speech_start is not None:
                # Keep the hangover silence too: Silero often scores a soft last syllable as
                # silence, and Whisper transcribes better with a little trailing quiet.
                early = self._take_early(event.sample)
                self._held = HeldTurn(self._buffer.end, time.monotonic())
                extra = self.settings.busy_end_extra_ms * VAD_SAMPLE_RATE // 1000
                if early is None and extra and not self._asr_idle():
                    self._held.due = self._fed + extra
                else:
                    await self._end_of_speech(self._buffer.peek(), early)
        quiet = self.settings.early_quiet_ms * VAD_SAMPLE_RATE // 1000
        if quiet and self._held is None and self._buffer.quiet_samples() >= quiet and self._early_is_stale():
            self._start_early()  # the level dropped before the VAD saw a pause: transcribe now
        if self._held is not None and self._held.due is not None and self._fed >= self._held.due:
            self._held.due = None
            await self._end_of_speech(self._buffer.peek())
        if (
            self._held is None
            and self._buffer.speech_samples() > self.settings.max_utterance_s * VAD_SAMPLE_RATE
        ):
            await self._end_of_speech(self._buffer.cut())

    # --- turns --------------------------------------------------------------------------------
    async def _resume_turn(self) -> None:
        """Speech again before the reply to the held turn started playing: that end was a pause.
        Cancel the reply quietly (the device never left `listening`) and let the turn go on."""
        self._held = None  # first: the cancelled reply must not release the buffer
        self.metrics.turns_resumed.inc()
        log.info("session %s: speech resumed before the reply played; the turn goes on", self.session_id)
        await self.cancel_reply(send_stop=False)

    def _release(self, held: HeldTurn | None) -> None:
        """`held` is over (its reply plays, or ended without playing): drop its audio. A no-op
        when it was taken back (speech resumed) or released already."""
        if held is not None and held is self._held:
            self._buffer.cut(held.end)
            self._held = None

    async def _holding(self, reply: Awaitable[None]) -> None:
        """Run a reply to the turn held now; however the reply ends (played, failed, nothing to
        answer, cancelled), that turn is over with it."""
        held = self._held
        try:
            await reply
        finally:
            self._release(held)

    def _start_early(self) -> None:
        """A pause: transcribe what was said so far while the VAD waits to see if the turn ends
        (gateway.early), in place of the run begun at an earlier pause."""
        self._drop_early()
        if not self._asr_idle():
            return  # ASR is busy: the turn is transcribed at its end, as without early runs
        utterance = self._buffer.peek()
        if len(utterance) < self.settings.min_utterance_ms * VAD_SAMPLE_RATE // 1000:
            return
        self._early = EarlyTurn(self._buffer.end, asyncio.create_task(self._early_work(utterance)))
        log.debug(
            "session %s: early transcription of samples up to %d (last voiced: %d)",
            self.session_id,
            self._buffer.end,
            self._buffer.voice_end,
        )

    def _early_is_stale(self) -> bool:
        """No early run, or something voiced came after its snapshot: a pause now needs a new one."""
        return self._early is None or self._buffer.voice_end > self._early.upto

    async def _early_work(self, utterance: Int16Array) -> tuple[Transcript, ReplyPrefetch | None]:
        transcript = await self._transcribe(utterance)
        text = transcript.text.strip()
        if not self.settings.early_reply or not text or text in self.settings.exit_commands:
            return transcript, None
        messages = self.history.messages(text, transcript.language)
        stream = self.stages.llm.stream_chat(messages)
        return transcript, ReplyPrefetch(messages, stream, self._count_early_reply)

    async def _transcribe(self, utterance: Int16Array) -> Transcript:
        with self.stages.asr_load.track():
            return await self.stages.asr.transcribe(utterance, self._language, self._device_language)

    def _asr_idle(self) -> bool:
        """ASR has time to spare for work that may be thrown away (gateway.early.AsrLoad). This
        session's early run dropped just now still counts as in flight until its task unwinds:
        not against it."""
        dropped = self._dropped_early is not None and not self._dropped_early.done()
        return self.stages.asr_load.idle(self.settings.early_asr_max_busy, time.monotonic(), int(dropped))

    def _early_holds(self, silence_start: int) -> bool:
        """Whether the early work holds the whole turn a silence beginning at `silence_start`
        would end (asked at the VAD's pause and at its end)."""
        return self._early is not None and self._early.holds_turn(silence_start, self._buffer.voice_end)

    def _take_early(self, silence_start: int) -> EarlyTurn | None:
        """The early work if it holds the whole turn the VAD ended (its silence beginning at
        `silence_start`), else None (the user spoke again after it: stale, dropped)."""
        if self._early_holds(silence_start):
            early, self._early = self._early, None
            self.metrics.early_asr.labels("used").inc()
            return early
        log.debug(
            "session %s: turn ended (silence from sample %d, last voiced %d); the early transcription "
            "(up to %s) does not hold it",
            self.session_id,
            silence_start,
            self._buffer.voice_end,
            None if self._early is None else self._early.upto,
        )
        self._drop_early()
        return None

    def _drop_early(self) -> None:
        if self._early is not None:
            early, self._early = self._early, None
            self.metrics.early_asr.labels("dropped").inc()
            early.cancel()
            self._dropped_early = early.work

    def _count_early_reply(self, result: str) -> None:
        self.metrics.early_reply.labels(result).inc()

    async def _end_of_speech(self, utterance: Int16Array, early: EarlyTurn | None = None) -> None:
        times = TurnTimes(speech_end=time.monotonic())
        if len(utterance) < self.settings.min_utterance_ms * VAD_SAMPLE_RATE // 1000:
            log.debug("session %s: %d ms utterance ignored", self.session_id, len(utterance) // 16)
            if early is not None:
                early.cancel()
            self._release(self._held)
            return
        # The utterance ends with the latest chunk: its last voiced frame reached us that much
        # audio time before the chunk did (devices send in real time).
        tail = utterance[-int(VOICE_END_SEARCH_S * VAD_SAMPLE_RATE) :]
        voiced = last_voiced_sample(int16_to_float(tail))
        if voiced:
            times.audio_in = self._chunk_at
            times.voice_end = self._chunk_at - (len(tail) - voiced) / VAD_SAMPLE_RATE
        if self._reply is not None and not self._reply.done():
            await self.cancel_reply(send_stop=True)  # a new utterance while speaking: barge-in
        self._reply = asyncio.create_task(self._holding(self._transcribe_and_reply(utterance, times, early)))

    async def _transcribe_and_reply(
        self, utterance: Int16Array, times: TurnTimes, early: EarlyTurn | None = None
    ) -> None:
        prefetch: ReplyPrefetch | None = None
        try:
            try:
                if early is not None:
                    # The same speech, transcribed (and maybe answered) during the silence.
                    transcript, prefetch = await self._early_outcome(early, utterance)
                else:
                    transcript = await self._transcribe(utterance)
            except VoicePipelineError as exc:
                code = "overloaded" if isinstance(exc, OverloadedError) else "asr_failed"
                if code == "asr_failed":
                    log.warning("session %s: ASR failed: %s", self.session_id, exc)
                await self._send_error(code, str(exc))
                # No reply will come: `tts stop` ends the turn on the device at once (back to
                # listening in auto mode, idle in manual) instead of leaving it waiting for audio.
                await self.out.send_json(proto.tts_stop(self.session_id))
                return
            times.stt = time.monotonic()
            text = transcript.text.strip()
            if not text:
                return
            if text in self.settings.exit_commands:
                await self.out.send_json(proto.stt(self.session_id, text))
                await self.out.close(proto.CLOSE_NORMAL, "exit command")
                return
            await self._reply_to(text, times, transcript.language, send_stt=True, prefetch=prefetch)
        finally:
            if prefetch is not None:
                prefetch.cancel()  # a no-op once the reply has read it all; else it was dropped

    async def _early_outcome(
        self, early: EarlyTurn, utterance: Int16Array
    ) -> tuple[Transcript, ReplyPrefetch | None]:
        """The early work's transcript, or, when that speculative run failed (ASR `overloaded` in
        a burst, a replica gone), the turn transcribed again now: only the turn's own run may
        fail the turn."""
        try:
            return await early.work
        except VoicePipelineError as exc:
            self.metrics.early_asr.labels("failed").inc()
            log.info(
                "session %s: early transcription failed (%s); transcribing the turn", self.session_id, exc
            )
            return await self._transcribe(utterance), None

    async def _start_reply(self, text: str, times: TurnTimes, send_stt: bool) -> None:
        await self.cancel_reply(send_stop=False)
        self._reply = asyncio.create_task(
            self._holding(self._reply_to(text, times, self._language, send_stt))
        )

    async def _reply_to(
        self,
        text: str,
        times: TurnTimes,
        language: str,
        send_stt: bool,
        prefetch: ReplyPrefetch | None = None,
    ) -> None:
        self.last_turn = times
        if send_stt:
            await self.out.send_json(proto.stt(self.session_id, text))
        spoken: list[str] = []
        ran_its_course = False  # answered or failed, not cancelled
        try:
            try:
                await asyncio.wait_for(
                    self._pipeline(text, times, language, spoken, prefetch), self.settings.reply_timeout_s
                )
            except OverloadedError as exc:
                await self._send_error("overloaded", str(exc))
                if exc.stage == "llm" and not spoken:
                    await self._say_busy(language)
            except VoicePipelineError as exc:
                log.warning("session %s: reply failed: %s", self.session_id, exc)
                await self._send_error("reply_failed", str(exc))
            except TimeoutError:
                await self._send_error(
                    "reply_timeout", f"reply took over {self.settings.reply_timeout_s:.0f} s"
                )
            ran_its_course = True
        finally:
            # A reply cancelled before it played is not history: its turn was taken back (the user
            # went on speaking) or replaced by another.
            if spoken or ran_its_course:
                self.history.commit(text, join_sentences(spoken))
        self.speaking = False
        await self.out.send_json(proto.tts_stop(self.session_id))
        self._log_turn(text, join_sentences(spoken), times)

    async def _say_busy(self, language: str) -> None:
        """Tell the user, not only the device's log, that the language model is saturated (a
        local llama.cpp server answering someone else): a short fixed sentence, best effort (TTS
        may be just as busy; the error frame has been sent either way)."""
        sentence_q: asyncio.Queue[object] = asyncio.Queue()
        audio_q: asyncio.Queue[object] = asyncio.Queue()
        for item in (BUSY_REPLY.get(language, BUSY_REPLY["en"]), _END):
            sentence_q.put_nowait(item)
        try:
            async with asyncio.timeout(BUSY_REPLY_TIMEOUT_S):
                async with asyncio.TaskGroup() as group:
                    # Not the turn's first audio: the latency metric is of answers.
                    answered = TurnTimes(speech_end=0.0, tts_audio=0.0, first_audio=0.0)
                    group.create_task(self._speak(sentence_q, audio_q, language, answered))
                    group.create_task(self._send(audio_q, answered, [], Opening()))
        except (TimeoutError, BaseExceptionGroup) as exc:
            log.info("session %s: busy answer not spoken: %r", self.session_id, exc)

    async def _pipeline(
        self,
        text: str,
        times: TurnTimes,
        language: str,
        spoken: list[str],
        prefetch: ReplyPrefetch | None = None,
    ) -> None:
        sentence_q: asyncio.Queue[object] = asyncio.Queue(maxsize=8)
        # Unbounded on purpose: a TTS stage holds one of its concurrency slots while its generator
        # is suspended, so backpressure from real-time playback here kept slots busy for the whole
        # playback of a sentence (the fleet benchmark: TTS latency 250 ms -> 2 s from 18 to 27
        # devices with the stage 97% idle). A reply is a few sentences (max_tokens caps it), so
        # buffering its packets costs kilobytes and frees each slot as soon as synthesis ends.
        audio_q: asyncio.Queue[object] = asyncio.Queue()
        opening = Opening()
        try:
            # The first failure cancels the other two (and so does a cancel of this reply).
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    self._write(self._reply_stream(text, language, prefetch), times, sentence_q, opening)
                )
                group.create_task(self._speak(sentence_q, audio_q, language, times))
                group.create_task(self._send(audio_q, times, spoken, opening))
        except BaseExceptionGroup as failed:
            # The callers handle the stage errors one by one: raise the failure that stopped the
            # reply (the others, if any, happened as the group was cancelled).
            raise failed.exceptions[0] from None

    def _reply_stream(
        self, text: str, language: str, prefetch: ReplyPrefetch | None
    ) -> AsyncIterator[TimedDelta]:
        """The language model's reply: the one begun at the pause if it was asked exactly what
        this turn asks (the history could have changed since), else a request made now."""
        messages = self.history.messages(text, language)
        if prefetch is not None:
            if prefetch.messages == messages:
                return prefetch.take()
            prefetch.cancel()
        return timed(self.stages.llm.stream_chat(messages))

    async def _write(
        self,
        stream: AsyncIterator[TimedDelta],
        times: TurnTimes,
        sentence_q: asyncio.Queue[object],
        opening: Opening,
    ) -> None:
        """LLM -> sentences, each handed to TTS the moment it is complete. The first sentence
        chooses the reply's face, shown when the reply starts playing."""
        splitter = SentenceSplitter()
        async for arrived, delta in stream:
            if times.first_token is None:
                times.first_token = arrived  # before the turn ended, for a reply begun early
            for sentence in splitter.push(delta):
                self._first_sentence(sentence, times, opening)
                await sentence_q.put(sentence)
        for sentence in splitter.flush():
            self._first_sentence(sentence, times, opening)
            await sentence_q.put(sentence)
        await sentence_q.put(_END)

    @staticmethod
    def _first_sentence(sentence: str, times: TurnTimes, opening: Opening) -> None:
        if opening.emotion is None:
            times.first_sentence = time.monotonic()
            opening.emotion = emotion_for(sentence)

    async def _speak(
        self,
        sentence_q: asyncio.Queue[object],
        audio_q: asyncio.Queue[object],
        language: str,
        times: TurnTimes,
    ) -> None:
        while (sentence := await sentence_q.get()) is not _END:
            assert isinstance(sentence, str)
            request = SpeechRequest(
                text=sentence,
                language=language,
                sample_rate=self.settings.output_sample_rate,
                frame_ms=self.settings.frame_ms,
            )
            # The subtitle goes with the sentence's first audio: until the reply's first audio,
            # nothing may reach the device (the turn can still be taken back).
            announced = False
            async for chunk in self.stages.tts.synthesize(request):
                if times.tts_audio is None:
                    times.tts_audio = time.monotonic()
                if not announced:
                    await audio_q.put(sentence)
                    announced = True
                await audio_q.put(chunk.packets)
            if not announced:
                await audio_q.put(sentence)
        await audio_q.put(_END)

    async def _begin_speaking(self, opening: Opening) -> None:
        """The reply's first audio is ready: the turn is over for good. The held audio goes, the
        device enters `speaking` (its microphone closes) and gets the reply's face."""
        if opening.done:
            return
        opening.done = True
        if self._held is not None:
            # Too soon after the end, the user may only be pausing: wait (a resume cancels us).
            wait = self._held.at + self.settings.hold_min_ms / 1000 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        self._release(self._held)
        await self.out.send_json(proto.tts_start(self.session_id))
        self.speaking = True
        if opening.emotion is not None:
            await self.out.send_json(proto.llm_emotion(self.session_id, opening.emotion))

    async def _send(
        self, audio_q: asyncio.Queue[object], times: TurnTimes, spoken: list[str], opening: Opening
    ) -> None:
        clock = PlaybackClock(frame_ms=self.settings.frame_ms, lead_ms=self.settings.playback_lead_ms)
        while (item := await audio_q.get()) is not _END:
            await self._begin_speaking(opening)
            if isinstance(item, str):
                await self.out.send_json(proto.tts_sentence_start(self.session_id, item))
                spoken.append(item)
                continue
            assert isinstance(item, list)
            for packet in item:
                delay = clock.delay_before_next(time.monotonic())
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.out.send_audio(packet)
                now = time.monotonic()
                clock.sent(now)
                if times.first_audio is None:
                    times.first_audio = now
                    self.metrics.e2e_first_audio.observe(now - times.speech_end)
                self._on_activity()
        # `tts stop` moves the device out of `speaking`: only once it has played what it got.
        await asyncio.sleep(clock.remaining(time.monotonic()))

    async def cancel_reply(self, send_stop: bool) -> None:
        task, self._reply = self._reply, None
        was_speaking = self.speaking
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.speaking = False
        if send_stop and (was_speaking or task is not None):
            await self.out.send_json(proto.tts_stop(self.session_id))

    async def _vad_trouble(self, exc: VoicePipelineError) -> None:
        """The VAD refused or failed a chunk: tell the device, at most once per interval.

        Audio arrives every 60 ms; one message per chunk would flood the device and the log.
        The session goes on: the next chunk is tried again.
        """
        now = time.monotonic()
        if now - self._last_vad_complaint < VAD_COMPLAINT_INTERVAL_S:
            return
        self._last_vad_complaint = now
        code = "overloaded" if isinstance(exc, OverloadedError) else "vad_failed"
        log.warning("session %s: VAD: %s", self.session_id, exc)
        await self._send_error(code, str(exc))

    async def _send_error(self, code: str, message: str) -> None:
        await self.out.send_json(proto.error(code, message, self.session_id))

    def _log_turn(self, text: str, reply: str, t: TurnTimes) -> None:
        steps = t.steps()
        for step, seconds in (steps or {}).items():
            self.metrics.turn_step.labels(step).observe(seconds)
        log.info(
            "session %s turn: stt_ms=%s first_token_ms=%s first_audio_ms=%s steps_ms=%s user=%r reply=%r",
            self.session_id,
            t.ms(t.stt),
            t.ms(t.first_token),
            t.ms(t.first_audio),
            ",".join(f"{k}:{round(v * 1000)}" for k, v in steps.items()) if steps else "-",
            text[:80],
            reply[:80],
        )
