"""Silero VAD on onnxruntime, many sessions per model call.

Silero v5/v6 is recurrent: each call takes a 512-sample window plus the 64 samples before it
(context) and a (2, batch, 128) state. Sessions are independent rows of the batch, so one call
advances every session that has a window ready: the model cost per call is nearly flat in batch
size, which is where the per-device cost of the reference server (one call per device) goes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voice_pipeline.common.errors import ModelMissingError
from voice_pipeline.vad.segmenter import WINDOW

CONTEXT = 64
STATE_SHAPE = (2, 128)
F32 = npt.NDArray[np.float32]


@dataclass
class VadState:
    """One session's recurrent state and the last CONTEXT samples it saw."""

    state: F32 = field(default_factory=lambda: np.zeros((2, 1, 128), np.float32))
    context: F32 = field(default_factory=lambda: np.zeros(CONTEXT, np.float32))

    def reset(self) -> None:
        self.state[:] = 0
        self.context[:] = 0


class SileroVad:
    def __init__(self, model_path: Path, threads: int = 1) -> None:
        if not model_path.is_file():
            raise ModelMissingError(
                "silero-vad", f"{model_path} not found", "voice-pipeline models install silero-vad"
            )
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._sr = np.array(16000, dtype=np.int64)
        self._lock = threading.Lock()  # one model call at a time (onnxruntime run is thread-safe, but
        # serializing keeps the batch large and the thread count honest)

    def step(self, states: list[VadState], windows: list[F32]) -> list[float]:
        """Advance each session by one 512-sample window (float32 in [-1, 1]); return P(voice)."""
        if not states:
            return []
        batch = np.stack([np.concatenate([s.context, w]) for s, w in zip(states, windows, strict=True)])
        state = np.concatenate([s.state for s in states], axis=1)
        with self._lock:
            out, new_state = self._session.run(None, {"input": batch, "state": state, "sr": self._sr})
        for i, s in enumerate(states):
            s.state = np.ascontiguousarray(new_state[:, i : i + 1, :])
            s.context = batch[i, -CONTEXT:].copy()
        return [float(p) for p in out[:, 0]]

    def run_sequences(self, states: list[VadState], sequences: list[list[F32]]) -> list[list[float]]:
        """Advance sessions by several windows each, in lock-step: one model call per step."""
        results: list[list[float]] = [[] for _ in states]
        steps = max((len(seq) for seq in sequences), default=0)
        for k in range(steps):
            active = [i for i, seq in enumerate(sequences) if k < len(seq)]
            probs = self.step([states[i] for i in active], [sequences[i][k] for i in active])
            for i, p in zip(active, probs, strict=True):
                results[i].append(p)
        return results


def split_windows(pcm: F32) -> tuple[list[F32], F32]:
    """Whole 512-sample windows of `pcm` and the remainder to carry to the next feed."""
    n = len(pcm) // WINDOW
    return [pcm[i * WINDOW : (i + 1) * WINDOW] for i in range(n)], pcm[n * WINDOW :]
