"""The xiaozhi `llm` message carries an emotion: the first known emoji of the reply decides it."""

from __future__ import annotations

EMOTIONS = {
    "😂": "funny",
    "🤣": "laughing",
    "😭": "crying",
    "😠": "angry",
    "😡": "angry",
    "😢": "sad",
    "😍": "loving",
    "🥰": "loving",
    "😮": "surprised",
    "😱": "shocked",
    "🤔": "thinking",
    "😌": "relaxed",
    "😴": "sleepy",
    "😜": "silly",
    "🤪": "silly",
    "😕": "confused",
    "😐": "neutral",
    "🙂": "happy",
    "😊": "happy",
    "😄": "laughing",
    "😆": "laughing",
    "😳": "embarrassed",
    "😉": "winking",
    "😎": "cool",
    "😋": "delicious",
    "😘": "kissy",
    "💪": "confident",
    "😏": "confident",
}
DEFAULT_EMOTION = "happy"


def emotion_for(text: str) -> str:
    for ch in text:
        if ch in EMOTIONS:
            return EMOTIONS[ch]
    return DEFAULT_EMOTION
