"""Where the time of one turn goes, from the end of the user's speech to the first Opus frame sent.

The gateway stamps each moment of a turn on one monotonic clock; `TurnTimes.steps` turns the
stamps into consecutive steps, so the steps of a turn add up exactly to its end-to-end time:

    voice_end   the last voiced 10 ms of the utterance (RMS above -40 dBFS) reached the server
    audio_in    the audio chunk that completed the utterance arrived (voice_end + the silence
                after it that the VAD waited for)
    speech_end  the turn ended: the VAD's end-of-speech event, a push-to-talk release, or text
    stt         the transcript is back
    first_token the language model's first token
    first_sentence  the first complete sentence, handed to TTS
    tts_audio   TTS's first Opus packets of that sentence
    first_audio the first packet sent to the device

Steps: silence (the end-of-turn wait), vad (deciding it, batching included), asr, llm_first_token,
first_sentence (the model writing it), tts_first_audio (synthesis + resampling + Opus; the TTS
stage observes its `encode` share apart) and send (queue, pacing, WebSocket write).

Work begun at a pause (gateway.early) can finish before the turn ends: the transcript, even the
first token. A step counts only the time the turn waited for it, from the later of its own start
stamp and the end of the step before: a step done inside the silence counts 0, and the steps still
add up to the whole wait. The provider's own time of such a step is then longer than the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate, pairwise

from voice_pipeline.contract import TURN_STEPS


@dataclass
class TurnTimes:
    """Monotonic stamps of one turn (see the module docstring); None = not reached (or, for the
    two before `speech_end`, not known: a typed question has no audio)."""

    speech_end: float
    voice_end: float | None = None
    audio_in: float | None = None
    stt: float | None = None
    first_token: float | None = None
    first_sentence: float | None = None
    tts_audio: float | None = None
    first_audio: float | None = None

    def ms(self, t: float | None) -> int | None:
        return None if t is None else round((t - self.speech_end) * 1000)

    def steps(self) -> dict[str, float] | None:
        """Seconds per step of TURN_STEPS, or None unless the turn had audio and reached its first
        frame sent (an aborted, failed or typed turn has no complete breakdown)."""
        stamps = (
            self.voice_end,
            self.audio_in,
            self.speech_end,
            self.stt,
            self.first_token,
            self.first_sentence,
            self.tts_audio,
            self.first_audio,
        )
        if any(t is None for t in stamps):
            return None
        waited = list(accumulate((t for t in stamps if t is not None), max))  # see the docstring
        return {step: b - a for step, (a, b) in zip(TURN_STEPS, pairwise(waited), strict=True)}
