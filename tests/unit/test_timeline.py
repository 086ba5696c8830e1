"""A turn's timestamps -> the steps of its end-of-speech -> first-audio time."""

from __future__ import annotations

import numpy as np
import pytest

from voice_pipeline.common.audio import last_voiced_sample
from voice_pipeline.contract import TURN_STEPS
from voice_pipeline.turn.timeline import TurnTimes


def test_speech_ends_at_the_last_frame_above_minus_40_dbfs() -> None:
    pcm = np.zeros(16000, np.float32)
    pcm[1600:4800] = 0.1  # -20 dBFS from 100 to 300 ms
    pcm[4800:6400] = 0.001  # -60 dBFS: silence
    assert last_voiced_sample(pcm) == 4800
    assert last_voiced_sample(np.zeros(100, np.float32)) == 0


def full_turn() -> TurnTimes:
    return TurnTimes(
        voice_end=10.0,
        audio_in=10.35,
        speech_end=10.4,
        stt=10.6,
        first_token=11.0,
        first_sentence=11.1,
        tts_audio=11.36,
        first_audio=11.362,
    )


def test_the_steps_are_consecutive_and_add_up_to_the_whole_wait() -> None:
    t = full_turn()
    steps = t.steps()
    assert steps is not None and list(steps) == list(TURN_STEPS)
    assert steps["silence"] == pytest.approx(0.35)
    assert steps["vad"] == pytest.approx(0.05)
    assert steps["asr"] == pytest.approx(0.2)
    assert steps["send"] == pytest.approx(0.002)
    assert t.first_audio is not None and t.voice_end is not None
    assert sum(steps.values()) == pytest.approx(t.first_audio - t.voice_end)


@pytest.mark.parametrize("missing", ["voice_end", "first_sentence", "first_audio"])
def test_a_turn_that_lacks_a_stamp_has_no_breakdown(missing: str) -> None:
    t = full_turn()
    setattr(t, missing, None)  # typed text (no audio), a reply that failed, an aborted reply
    assert t.steps() is None


def test_work_done_before_the_turn_ended_counts_only_the_wait_it_caused() -> None:
    # Transcribed and answered early: the transcript and the first token came inside the silence.
    t = full_turn()
    t.stt, t.first_token, t.first_sentence = 10.2, 10.3, 10.5
    steps = t.steps()
    assert steps is not None and min(steps.values()) >= 0
    assert steps["asr"] == 0 and steps["llm_first_token"] == 0
    assert steps["first_sentence"] == pytest.approx(0.1)  # from the end of the turn, not the token
    assert sum(steps.values()) == pytest.approx(11.362 - 10.0)
