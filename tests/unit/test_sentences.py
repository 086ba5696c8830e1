"""Streaming sentence splitting: as early as safe, never inside numbers or abbreviations."""

from __future__ import annotations

import pytest

from voice_pipeline.turn.sentences import SentenceSplitter


def split(deltas: list[str]) -> list[str]:
    splitter = SentenceSplitter()
    out = [s for d in deltas for s in splitter.push(d)]
    return out + splitter.flush()


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        (["It is sunny", " today. Take a", " hat!"], ["It is sunny today.", "Take a hat!"]),
        (["Pi is 3.", "14 roughly. Yes indeed."], ["Pi is 3.14 roughly.", "Yes indeed."]),
        (["Mr. Smith is here. He waits."], ["Mr. Smith is here.", "He waits."]),
        (["今天天气很好。", "我们去公园吧！"], ["今天天气很好。", "我们去公园吧！"]),
        (["你好！我是小智。"], ["你好！我是小智。"]),  # a 3-character greeting merges forward
        (["Ok. ", "That works well for me."], ["Ok. That works well for me."]),
        (["No end mark at all"], ["No end mark at all"]),
        (["First line here\nSecond line here"], ["First line here", "Second line here"]),
    ],
)
def test_splits(deltas: list[str], expected: list[str]) -> None:
    assert split(deltas) == expected


def test_first_sentence_is_cut_at_a_comma_when_long() -> None:
    splitter = SentenceSplitter(first_cut_chars=24)
    first = splitter.push("Well, that is a really interesting question, and")
    assert first == ["Well, that is a really interesting question,"]
    # Later sentences wait for a real end mark.
    assert splitter.push(" the answer, which is long, continues") == []


def test_a_short_opening_does_not_hold_the_first_sentence_back() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("好的！") == []  # too short to speak alone
    # The held opening counts towards the first cut: spoken at the next comma, not at the "。".
    assert splitter.push("今天天气晴朗，气温") == ["好的！今天天气晴朗，"]
    # Later sentences wait for a real end mark.
    assert splitter.push("适宜，下午会有微风") == []
    assert splitter.push("。") == ["气温适宜，下午会有微风。"]


def test_sentence_is_emitted_as_soon_as_its_end_arrives() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Hello there, friend") == []
    assert splitter.push(". And") == ["Hello there, friend."]
