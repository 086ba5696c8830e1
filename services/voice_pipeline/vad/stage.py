"""In-process VAD stage: per-session streams, model calls batched across sessions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from voice_pipeline.common.audio import Int16Array, int16_to_float
from voice_pipeline.common.batching import BatchConfig, MicroBatcher
from voice_pipeline.common.errors import VoicePipelineError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import VadEvent
from voice_pipeline.models.registry import require_model
from voice_pipeline.vad.engine import F32, SileroVad, VadState, split_windows
from voice_pipeline.vad.segmenter import Segmenter
from voice_pipeline.vad.settings import VadSettings


@dataclass
class _Session:
    segmenter: Segmenter
    model: VadState = field(default_factory=VadState)
    remainder: F32 = field(default_factory=lambda: np.zeros(0, np.float32))


@dataclass(frozen=True)
class _Job:
    state: VadState
    windows: list[F32]


class InProcessVad:
    """Implements common.stages.VadStage; use as an async context manager (loads the model)."""

    def __init__(self, settings: VadSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._sessions: dict[str, _Session] = {}
        self._model: SileroVad | None = None
        self._batcher: MicroBatcher[_Job, list[float]] | None = None

    async def __aenter__(self) -> InProcessVad:
        self._model = SileroVad(require_model("silero-vad") / "silero_vad.onnx", self.settings.threads)
        config = BatchConfig(
            self.settings.batch_max_size, self.settings.batch_max_wait_ms / 1000, self.settings.queue_size
        )
        self._batcher = MicroBatcher("vad", self._process, config, self.metrics)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._batcher is not None:
            await self._batcher.stop()

    def _process(self, jobs: Sequence[_Job]) -> list[list[float]]:
        assert self._model is not None
        return self._model.run_sequences([j.state for j in jobs], [j.windows for j in jobs])

    async def open(self, session_id: str) -> None:
        self._sessions[session_id] = _Session(Segmenter(self.settings))

    async def reset(self, session_id: str) -> None:
        session = self._session(session_id)
        session.segmenter.reset()
        session.model.reset()

    async def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def feed(self, session_id: str, pcm: Int16Array) -> list[VadEvent]:
        session = self._session(session_id)
        audio = np.concatenate([session.remainder, int16_to_float(pcm)])
        windows, remainder = split_windows(audio)
        if not windows:
            session.remainder = remainder
            return []
        assert self._batcher is not None, "use InProcessVad as an async context manager"
        # A refused chunk (overload) leaves the session as it was: the caller drops it whole.
        probabilities = await self._batcher.submit(_Job(session.model, windows))
        session.remainder = remainder
        events = []
        for p in probabilities:
            event = session.segmenter.push(p)
            if event is not None:
                events.append(event)
        return events

    def _session(self, session_id: str) -> _Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise VoicePipelineError(f"VAD session {session_id} is not open") from None
