"""Cut streamed LLM text into sentences as early as it is safe to speak them.

TTS needs whole sentences (prosody), but waiting for the full reply costs seconds. `push` returns
each sentence the moment its end mark arrives; the first sentence may also be cut at a comma once
it is long enough, since time to first audio is what the user notices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CJK_END = "。！？；…"
_LATIN_END = ".!?;"
_COMMAS = "，、,：:"
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "no", "jr", "sr"}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")


def _is_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


@dataclass
class SentenceSplitter:
    min_chars_cjk: int = 4
    min_chars_latin: int = 10
    first_cut_chars: int = 24  # cut the first sentence at a comma past this length
    first_cut_chars_cjk: int = 10  # the same for Chinese (a character carries ~2.5x a Latin one)
    _buffer: str = ""
    _emitted: int = 0
    _pending: list[str] = field(default_factory=list)

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        out: list[str] = []
        while (cut := self._find_cut()) is not None:
            sentence, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if sentence:
                out.extend(self._accept(sentence))
        return out

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        out = []
        if rest:
            out.extend(self._accept(rest, final=True))
        elif self._pending:
            out.append(
                " ".join(self._pending) if not _is_cjk("".join(self._pending)) else "".join(self._pending)
            )
            self._pending = []
        return out

    def _accept(self, sentence: str, final: bool = False) -> list[str]:
        """Merge fragments too short to speak on their own with what follows."""
        joiner = "" if _is_cjk(sentence) else " "
        text = joiner.join([*self._pending, sentence]) if self._pending else sentence
        minimum = self.min_chars_cjk if _is_cjk(text) else self.min_chars_latin
        if len(text) < minimum and not final:
            self._pending = [text]
            return []
        self._pending = []
        self._emitted += 1
        return [text]

    def _find_cut(self) -> int | None:
        text = self._buffer
        for i, ch in enumerate(text):
            if ch == "\n":
                return i + 1
            if ch in _CJK_END:
                j = i + 1
                while j < len(text) and text[j] in _CJK_END + "”’\"')）":
                    j += 1
                return j
            if ch in _LATIN_END:
                if i + 1 >= len(text):
                    return None  # maybe "3." of "3.14", or "..." still coming
                nxt = text[i + 1]
                if ch == "." and (nxt.isdigit() or nxt == "."):
                    continue
                if ch == "." and self._is_abbreviation(text[:i]):
                    continue
                if nxt.isspace() or nxt in "\"')”’":
                    return i + 1
        # A short opening held back ("好的！", "OK.") counts towards the first cut, or it would
        # make the first sentence wait for the whole next one.
        held = sum(len(p) for p in self._pending)
        limit = self.first_cut_chars_cjk if _is_cjk(text) else self.first_cut_chars
        if self._emitted == 0 and held + len(text) >= limit:
            for i in range(len(text) - 1, max(0, limit // 2 - held), -1):
                if text[i] in _COMMAS and i + 1 < len(text):
                    return i + 1
        return None

    @staticmethod
    def _is_abbreviation(before: str) -> bool:
        word = before.split()[-1].lower() if before.split() else ""
        return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def join_sentences(sentences: list[str]) -> str:
    """Sentences back into one text: Chinese has no spaces between sentences, English does."""
    parts = [s for s in sentences if s]
    return "".join(parts) if any(_is_cjk(s) for s in parts) else " ".join(parts)
