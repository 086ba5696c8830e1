"""Speech segmentation from per-window voice probabilities: pure, one instance per session.

Hysteresis as in the reference server: a window is voiced at >= `threshold`, silent at <=
`neg_threshold` (in between it keeps the current state). Speech starts when `start_windows` of the
last `window_history` windows are voiced, and ends after `min_silence_ms` of silent windows. On the
way, `pause_ms` of silence reports a pause (once per silent run): the gateway transcribes early.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from voice_pipeline.common.stages import VadEvent
from voice_pipeline.vad.settings import VadSettings

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
SAMPLE_RATE = 16000


@dataclass
class Segmenter:
    settings: VadSettings
    window: int = WINDOW
    in_speech: bool = False
    speech_start: int = 0
    silence_run: int = 0  # consecutive silent windows while in speech
    recent: deque[bool] = field(default_factory=deque)
    position: int = 0  # samples consumed so far

    def _ms(self, windows: int) -> float:
        return windows * self.window * 1000 / SAMPLE_RATE

    def push(self, probability: float) -> VadEvent | None:
        """Consume one window's probability; return the boundary it completes, if any."""
        s = self.settings
        start_of_window = self.position
        self.position += self.window
        voiced = probability >= s.threshold or (self.in_speech and probability > s.neg_threshold)
        self.recent.append(voiced)
        while len(self.recent) > s.window_history:
            self.recent.popleft()
        if not self.in_speech:
            if sum(self.recent) >= s.start_windows:
                self.in_speech = True
                self.silence_run = 0
                # Speech began at the first voiced window of the vote, not at the deciding one.
                first_voiced = len(self.recent) - 1 - list(self.recent).index(True)
                self.speech_start = max(0, start_of_window - first_voiced * self.window)
                return VadEvent("speech_start", self.speech_start)
            return None
        self.silence_run = 0 if voiced else self.silence_run + 1
        # Both events name where the silence began: the same sample tells the gateway that the
        # end is the end of the pause it heard (no speech in between).
        silence_start = self.position - self.silence_run * self.window
        if self._ms(self.silence_run) >= s.min_silence_ms:
            self.in_speech = False
            self.recent.clear()
            # Every start gets its end; the gateway drops utterances too short to transcribe.
            return VadEvent("speech_end", silence_start)
        if (
            s.pause_ms
            and self.silence_run
            and self._ms(self.silence_run - 1) < s.pause_ms <= self._ms(self.silence_run)
        ):
            return VadEvent("speech_pause", silence_start)
        return None

    def reset(self) -> None:
        self.in_speech = False
        self.silence_run = 0
        self.recent.clear()
