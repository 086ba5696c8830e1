"""Pure decisions that bound what one utterance may cost the decoder (issue 14, item 3).

Bad audio (noise, reversed speech, a language the model cannot place) is where Whisper loops: it
repeats a token or a short phrase until the length cap. Three decisions keep that bounded:

- `token_cap`: the decode length follows the utterance's duration. Speech carries only so many
  tokens per second, so a cap proportional to the seconds (plus a floor for very short utterances)
  never cuts real speech but stops a loop after a few seconds' worth of tokens.
- `loop_start`: a tail that repeats one short pattern many times, or a whole sentence twice, is a
  loop; the transcript keeps the text before the loop plus one copy of the pattern (the cap is
  what stops the decoder: CTranslate2's Whisper cannot be interrupted mid-call, see whisper.py).
- `choose_language`: under `auto`, a detection that gives no allowed language enough probability
  (noise, reversed speech) falls back to the configured language instead of a guess; such an
  utterance is decoded with the loop guards (repetition penalty, n-gram ban) that cost real speech
  accuracy but stop the loops unplaceable audio falls into (whisper.py).
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence


def token_cap(seconds: float, tokens_per_second: float, floor: int, ceiling: int) -> int:
    """Most tokens to decode for an utterance of `seconds`: floor + rate x seconds, at most
    `ceiling` (the absolute cap). Rounded up so a partial second still gets its tokens."""
    cap = floor + math.ceil(max(0.0, seconds) * tokens_per_second)
    return max(1, min(ceiling, cap))


def loop_start(
    tokens: Sequence[int],
    short_period: int = 8,
    min_repeats: int = 3,
    min_loop_tokens: int = 8,
    sentence_ends: Container[int] = (),
) -> int | None:
    """Where a repetition loop at the end of `tokens` begins, or None.

    A loop is a tail of back-to-back copies of one pattern, in one of two shapes:
    - a short pattern (at most `short_period` tokens: a syllable, a word, a phrase) repeated at
      least `min_repeats` times over at least `min_loop_tokens` tokens. Both minimums matter: "no,
      no, no" or "bye bye" is speech (few repeats, few tokens), twelve copies of one character is
      not;
    - a longer pattern (a whole sentence) said at least twice. Whisper falls into this one on some
      CPUs ("Book a table for 4 out of an Italian restaurant. Book a table ..." to the cap, on an
      AVX2-only EPYC; not on AVX-512 ones): two copies of 9+ tokens back to back at the cap are
      not speech.
    The returned index is where the second copy starts: everything before it (the text and one
    copy of the pattern, as it first appeared) is kept, the repeats are dropped. The shortest
    period wins, so "ab" x 6 is cut as ab-ab-..., not as abab x 3. A sentence's first copy can
    differ from its repeats in its first token ("turn off ... Turn off ..."), so the repetition
    seems to begin one token late; the cut then moves back to the last of `sentence_ends` (token
    ids of ".", "?", "。"...) inside the kept copy, where the next copy really begins."""
    n = len(tokens)
    for period in range(1, n // 2 + 1):
        repeats = 1
        while (repeats + 1) * period <= n and (
            tokens[n - (repeats + 1) * period : n - repeats * period] == tokens[n - period : n]
        ):
            repeats += 1
        if period <= short_period:
            is_loop = repeats >= min_repeats and repeats * period >= min_loop_tokens
        else:
            is_loop = repeats >= 2  # a whole sentence said again
        if is_loop:
            # The cap can stop the loop mid-pattern ("天一天一天一" is the pattern "一天" cut);
            # walk back to where the repetition really starts, and keep one whole copy from there.
            begin = n - repeats * period
            while begin > 0 and tokens[begin - 1] == tokens[begin - 1 + period]:
                begin -= 1
            ends = [i + 1 for i in range(begin, begin + period) if tokens[i] in sentence_ends]
            return ends[-1] if ends else begin + period
    return None


def choose_language(
    scores: Mapping[str, float], allowed: Iterable[str], fallback: str, min_probability: float
) -> tuple[str, bool]:
    """(language, confident): the likeliest allowed language if the detector gives it at least
    `min_probability`, else (`fallback`, False). Whisper's detector spreads probability over ~100
    languages: on noise it says Nynorsk or Japanese, on reversed English Latin, and the best
    allowed language then holds a few percent. Decoding such audio in a guessed language is where
    loops start; the configured language is the better guess."""
    candidates = list(allowed)
    if not candidates:
        return fallback, False
    best = max(candidates, key=lambda lang: scores.get(lang, 0.0))
    return (best, True) if scores.get(best, 0.0) >= min_probability else (fallback, False)
