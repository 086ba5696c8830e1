"""Chat history window, emotion mapping and speech text cleaning."""

from __future__ import annotations

import pytest

from voice_pipeline.tts.text import clean_for_speech, guess_language
from voice_pipeline.turn.emotion import emotion_for
from voice_pipeline.turn.history import ChatHistory

PROMPTS = {"en": "EN prompt", "zh": "中文提示"}


def test_history_window_keeps_recent_turns_within_budget() -> None:
    conv = ChatHistory(PROMPTS, max_turns=2, max_chars=1000)
    for i in range(4):
        conv.commit(f"q{i}", f"a{i}")
    messages = conv.messages("now", "en")
    assert [m.content for m in messages] == ["EN prompt", "q2", "a2", "q3", "a3", "now"]
    assert conv.messages("现在", "zh")[0].content == "中文提示"
    assert conv.messages("x", "fr")[0].content == "EN prompt"


def test_char_budget_drops_oldest_first() -> None:
    conv = ChatHistory(PROMPTS, max_turns=10, max_chars=25)
    conv.commit("old question", "old answer")  # 22 chars
    conv.commit("new q", "new a")  # 10 chars
    assert [m.content for m in conv.messages("x")][1:-1] == ["new q", "new a"]


def test_unanswered_turns_are_not_recorded() -> None:
    conv = ChatHistory(PROMPTS)
    conv.commit("hello", "  ")
    assert conv.is_fresh
    conv.commit("hello", "Hi.")
    assert not conv.is_fresh


@pytest.mark.parametrize(
    ("text", "emotion"), [("好的😂", "funny"), ("Sure 🤔 maybe", "thinking"), ("plain", "happy")]
)
def test_emotion(text: str, emotion: str) -> None:
    assert emotion_for(text) == emotion


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("**Bold** and `code`", "Bold and code"),
        ("Visit https://example.com now 😀", "Visit now"),
        ("- item one", "item one"),
        ("🙂🙂", ""),
        ("...", ""),
        ("你好！😊", "你好！"),
    ],
)
def test_clean_for_speech(raw: str, clean: str) -> None:
    assert clean_for_speech(raw) == clean


def test_guess_language() -> None:
    assert guess_language("今天天气很好") == "zh"
    assert guess_language("The weather is fine") == "en"
    assert guess_language("我用 Python") == "zh"
