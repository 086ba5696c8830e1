"""Make LLM text speakable: no markdown, emojis or URLs; guess the language."""

from __future__ import annotations

import re

_URL = re.compile(r"https?://\S+")
_MARKDOWN = re.compile(r"[*_`#>|~]+")
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d]")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_SPEAKABLE = re.compile(r"[\w\u3400-\u9fff]")


def clean_for_speech(text: str) -> str:
    text = _URL.sub(" ", text)
    text = _EMOJI.sub("", text)
    text = _MARKDOWN.sub(" ", text)
    text = re.sub(r"^\s*[-•]\s+", "", text, flags=re.MULTILINE)  # list bullets
    text = " ".join(text.split())
    return text if _SPEAKABLE.search(text) else ""


def guess_language(text: str) -> str:
    cjk = len(_CJK.findall(text))
    letters = sum(ch.isascii() and ch.isalpha() for ch in text)
    # Chinese with an English word or two is still Chinese: a Latin word is ~5 letters, a CJK word ~2.
    return "zh" if cjk and cjk * 4 >= letters else "en"
