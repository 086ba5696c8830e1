"""Word and character error rates for the ASR benchmark: pure functions.

The normalisation is explicit, because WER moves by points with it. Both the reference and the
hypothesis go through the same steps:

English (`normalize_en`), in this order:
1. Unicode quotes to ASCII (’ -> '), lower case.
2. Numbers become words, the way they are spoken: "7" -> "seven", "2,500" -> "two thousand five
   hundred", "2.5" -> "two point five", "3rd" -> "third", "15%" -> "fifteen percent", "$50" -> "fifty
   dollars", "7:30" -> "seven thirty" ("7:00" -> "seven"). A reference written "seven" and a
   transcript "7" therefore match; years ("1990" read "nineteen ninety") do not, so the test set
   has none.
3. "a.m."/"p.m." -> "am"/"pm"; hyphens and slashes separate words ("forty-two" -> "forty two").
4. Every other punctuation mark is dropped, apostrophes inside words stay ("what's" stays one word,
   it is not expanded to "what is"). Whitespace is collapsed.

Chinese (`normalize_zh`): punctuation (CJK and ASCII) and whitespace are dropped; the error rate is
over characters. Traditional and simplified characters are NOT folded: whisper-base often writes
traditional forms (個 for 个) and that is counted as an error.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SCALES = [(10**9, "billion"), (10**6, "million"), (1000, "thousand")]
ORDINAL_ENDINGS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(TENS[n // 10])
        n %= 10
        if n:
            words.append(ONES[n])
    elif n or not words:
        words.append(ONES[n])
    return words


def number_words(n: int) -> list[str]:
    """A non-negative integer as spoken, without "and": 250 -> two hundred fifty."""
    if n < 1000:
        return _below_thousand(n)
    words: list[str] = []
    for value, name in SCALES:
        if n >= value:
            words += [*number_words(n // value), name]
            n %= value
    if n:
        words += _below_thousand(n)
    return words


def ordinal_words(n: int) -> list[str]:
    words = number_words(n)
    last = words[-1]
    if last in ORDINAL_ENDINGS:
        words[-1] = ORDINAL_ENDINGS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return words


_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_MONEY = re.compile(r"\$(\d[\d,]*(?:\.\d+)?)")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_INTEGER = re.compile(r"\d+")


def _time(m: re.Match[str]) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes == 0:
        return " ".join(number_words(hours))
    mins = number_words(minutes) if minutes >= 10 else ["oh", *number_words(minutes)]
    return " ".join([*number_words(hours), *mins])


def _decimal(m: re.Match[str]) -> str:
    return " ".join([*number_words(int(m.group(1))), "point", *(ONES[int(d)] for d in m.group(2))])


def digits_to_words(text: str) -> str:
    text = _TIME.sub(_time, text)
    text = _MONEY.sub(lambda m: f"{m.group(1)} dollars", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # thousands separators
    text = _ORDINAL.sub(lambda m: " ".join(ordinal_words(int(m.group(1)))), text)
    text = _DECIMAL.sub(_decimal, text)
    text = text.replace("%", " percent")
    return _INTEGER.sub(lambda m: " " + " ".join(number_words(int(m.group(0)))) + " ", text)


def normalize_en(text: str) -> list[str]:
    text = text.replace("\u2019", "'").replace("\u2018", "'").lower()
    text = digits_to_words(text)
    text = re.sub(r"\b([ap])\.m\.", r"\1m", text)
    text = re.sub(r"[-/]", " ", text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def normalize_zh(text: str) -> list[str]:
    return [ch for ch in text if not ch.isspace() and not unicodedata.category(ch).startswith(("P", "S"))]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over tokens: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def error_rate(pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> float:
    """Corpus error rate: total edits over total reference tokens (not a mean of per-utterance
    rates, which would let a two-word command weigh as much as a twenty-word question)."""
    words = sum(len(ref) for ref, _ in pairs)
    edits = sum(edit_distance(ref, hyp) for ref, hyp in pairs)
    return edits / words if words else 0.0


def tokens(text: str, language: str) -> list[str]:
    return normalize_zh(text) if language == "zh" else normalize_en(text)
