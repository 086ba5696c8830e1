"""Work begun at a pause in speech, before the VAD knows whether the turn ends there.

At the first sign of a pause the gateway transcribes the utterance so far and,
when the transcript is something to answer and `gateway.early_reply` is on (off by default, see
GatewaySettings), starts the language model on it, buffering the reply. If the turn then ends in
that same silence (`min_silence_ms`, 160 ms), both are the turn's: the transcript and part of the
model's time to first token are spent while the VAD's end-of-turn wait runs anyway. If speech
goes on instead, both are cancelled; a dropped early reply costs the provider one prompt and the
few tokens it wrote before the cancel. Nothing reaches the device, the history or the caches
before the turn is over.

Two signs start it, whichever comes first: `early_quiet_ms` (GatewaySettings) of quiet audio after
the last voiced 10 ms frame, or the VAD's `speech_pause` (`pause_ms` of windows it scores as
silence). Silero scores ~100-150 ms of a word's tail as voice, so the quiet comes first where the
room is quiet; in a noisy one the level never drops and the VAD's pause does the work.

`AsrLoad` gates it: early work spends idle ASR time only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from voice_pipeline.common.stages import ChatMessage, Transcript

ASR_BUSY_HALF_LIFE_S = 5.0


@dataclass
class AsrLoad:
    """This gateway's transcriptions, over all its sessions: how many are in flight, and the share
    of the recent time at least one was (an exponential average, ASR_BUSY_HALF_LIFE_S). Early
    transcription spends idle ASR time only: it runs when none is in flight and ASR has been mostly
    idle. Measured at 57 devices: early runs whenever none was in flight (a third thrown away) took
    the p95 first audio from ~1.8 s to 3.3 s; the busy-share gate keeps them off near capacity."""

    inflight: int = 0
    busy_share: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def advance(self, now: float) -> None:
        """Fold the time since the last change into the busy share."""
        elapsed = now - self.updated
        if elapsed > 0:
            keep = 0.5 ** (elapsed / ASR_BUSY_HALF_LIFE_S)
            self.busy_share = self.busy_share * keep + (1 - keep) * (1.0 if self.inflight else 0.0)
            self.updated = now

    def idle(self, max_busy: float, now: float, own_runs: int = 0) -> bool:
        """None in flight but the caller's `own_runs` (cancelled, still counted until they
        unwind), and ASR mostly idle of late."""
        self.advance(now)
        return self.inflight <= own_runs and self.busy_share < max_busy

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.advance(time.monotonic())
        self.inflight += 1
        try:
            yield
        finally:
            self.advance(time.monotonic())
            self.inflight -= 1


TimedDelta = tuple[float, str]  # (monotonic time it arrived, text delta)


async def timed(stream: AsyncIterator[str]) -> AsyncIterator[TimedDelta]:
    """A reply stream's deltas with the moment each arrived."""
    async for delta in stream:
        yield time.monotonic(), delta


class ReplyPrefetch:
    """A language-model reply started before its turn was known to be over.

    A task reads the stream into a buffer (unbounded: a reply is a few sentences, max_tokens caps
    it) with each delta's arrival time, so the turn's first-token stamp is when the token came,
    not when the turn took it. A failure of the stream is handed to whoever takes the reply: the
    same error a request started at the end of the turn would have met.

    `outcome` is told once what became of it: "used" (a turn took it) or "dropped" (cancelled
    before any turn did)."""

    def __init__(
        self, messages: list[ChatMessage], stream: AsyncIterator[str], outcome: Callable[[str], None]
    ) -> None:
        self.messages = messages  # what the model was asked: valid only if the turn would ask the same
        self._outcome: Callable[[str], None] | None = outcome
        self._buffer: asyncio.Queue[TimedDelta | Exception | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(stream))

    async def _read(self, stream: AsyncIterator[str]) -> None:
        try:
            async for item in timed(stream):
                self._buffer.put_nowait(item)
        except Exception as exc:  # re-raised where the reply is taken
            self._buffer.put_nowait(exc)
        else:
            self._buffer.put_nowait(None)

    def take(self) -> AsyncIterator[TimedDelta]:
        """The reply for the turn (once): buffered part first, then the rest as it comes."""
        self._settle("used")
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[TimedDelta]:
        try:
            while (item := await self._buffer.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.cancel()  # the taker stopped early (barge-in, a failure): so does the request

    def cancel(self) -> None:
        """Stop the request (closing the stream tells the provider); a no-op once it is done.
        Cancelled before a turn took it, it was dropped."""
        self._reader.cancel()
        self._settle("dropped")

    def _settle(self, result: str) -> None:
        outcome, self._outcome = self._outcome, None
        if outcome is not None:
            outcome(result)


EarlyWork = asyncio.Task[tuple[Transcript, ReplyPrefetch | None]]


# How far after an early snapshot the VAD's silence may begin for the snapshot still to hold the
# whole turn when nothing voiced came after it: Silero scores up to ~200 ms of quiet tail as voice
# (`make bench-asr` clips: p90 ~200 ms from the last voiced frame), a snapshot is taken >= 60 ms
# after that frame. A later silence start means the VAD heard speech too quiet for the level mark.
VAD_TAIL_SAMPLES = 4000  # 250 ms at 16 kHz


@dataclass
class EarlyTurn:
    """The work begun at one pause: transcript first, then (maybe) the reply prefetch.

    `upto`: where the snapshot of the utterance it transcribes ends (absolute sample, VAD
    numbering)."""

    upto: int
    work: EarlyWork

    def holds_turn(self, silence_start: int, voice_end: int) -> bool:
        return snapshot_holds_turn(self.upto, silence_start, voice_end)

    def cancel(self) -> None:
        """Speech went on, or the session ended: stop the transcription and any reply it began."""
        self.work.cancel()
        self.work.add_done_callback(_cancel_prefetch)


def snapshot_holds_turn(upto: int, silence_start: int, voice_end: int) -> bool:
    """Whether the utterance up to `upto` is the whole turn the VAD ended, its silence beginning
    at `silence_start`, the utterance's last voiced frame now ending at `voice_end`: either the
    VAD's silence began inside the snapshot, or nothing voiced came after it and the VAD's silence
    began within its usual tail."""
    if silence_start <= upto:
        return True
    return voice_end <= upto and silence_start - upto <= VAD_TAIL_SAMPLES


def _cancel_prefetch(task: EarlyWork) -> None:
    # Collecting the outcome also keeps a failure that nobody wants from being logged as lost.
    if task.cancelled() or task.exception() is not None:
        return
    _, prefetch = task.result()
    if prefetch is not None:
        prefetch.cancel()
