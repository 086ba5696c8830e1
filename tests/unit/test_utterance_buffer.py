"""UtteranceBuffer: pre-roll trimming and cutting utterances at VAD sample offsets."""

from __future__ import annotations

import numpy as np

from voice_pipeline.gateway.conversation import UtteranceBuffer


def _ramp(start: int, n: int) -> np.ndarray:
    return (np.arange(start, start + n) % 30000).astype(np.int16)


def test_keeps_only_preroll_and_slack_while_silent() -> None:
    buf = UtteranceBuffer(preroll=1000, slack=2000)
    for i in range(50):
        buf.append(_ramp(i * 960, 960))
    assert 3000 <= buf.size <= 3000 + 960
    assert buf.base + buf.size == 50 * 960


def test_cut_returns_speech_with_preroll_and_keeps_the_rest() -> None:
    buf = UtteranceBuffer(preroll=500)
    for i in range(20):
        buf.append(_ramp(i * 960, 960))
        if i == 5:
            buf.mark_start(5000)
    utterance = buf.cut(15000)
    assert utterance[0] == 4500 and utterance[-1] == 14999
    assert len(utterance) == 10500
    assert buf.base == 15000 and buf.size == 20 * 960 - 15000
    assert buf.speech_start is None


def test_speech_samples_counts_from_marked_start() -> None:
    buf = UtteranceBuffer(preroll=0)
    buf.append(_ramp(0, 1000))
    buf.mark_start(200)
    buf.append(_ramp(1000, 1000))
    assert buf.speech_samples() == 1800
