"""WER/CER normalisation and counting for the ASR benchmark (bench/asr_text.py)."""

from __future__ import annotations

import pytest

from voice_pipeline.bench.asr_text import (
    edit_distance,
    error_rate,
    normalize_en,
    normalize_zh,
    number_words,
    ordinal_words,
)


@pytest.mark.parametrize(
    ("n", "spoken"),
    [
        (0, "zero"),
        (7, "seven"),
        (15, "fifteen"),
        (40, "forty"),
        (42, "forty two"),
        (250, "two hundred fifty"),
        (1000, "one thousand"),
        (2500, "two thousand five hundred"),
        (1_000_017, "one million seventeen"),
    ],
)
def test_numbers_read_as_words(n: int, spoken: str) -> None:
    assert " ".join(number_words(n)) == spoken


def test_ordinals() -> None:
    assert [" ".join(ordinal_words(n)) for n in (1, 2, 3, 5, 12, 14, 20, 21)] == [
        "first", "second", "third", "fifth", "twelfth", "fourteenth", "twentieth", "twenty first",
    ]  # fmt: skip


def test_case_punctuation_and_digits_vs_words_normalise_alike() -> None:
    assert normalize_en("Set a timer for 10 minutes.") == normalize_en("set a timer for ten minutes")
    assert normalize_en("What is 15 times 4?") == ["what", "is", "fifteen", "times", "four"]
    assert normalize_en("Forty-two, please!") == ["forty", "two", "please"]


def test_money_percent_time_decimals_and_thousands() -> None:
    assert normalize_en("I owe John $50.") == ["i", "owe", "john", "fifty", "dollars"]
    assert normalize_en("Dim it to 30%") == ["dim", "it", "to", "thirty", "percent"]
    assert normalize_en("at 7:30 a.m.") == ["at", "seven", "thirty", "am"]
    assert normalize_en("at 7:00") == ["at", "seven"]
    assert normalize_en("2.5 kilos") == ["two", "point", "five", "kilos"]
    assert normalize_en("2,500 people") == normalize_en("2500 people")
    assert normalize_en("the 14th") == ["the", "fourteenth"]


def test_apostrophes_stay_inside_words_and_curly_quotes_become_straight() -> None:
    assert normalize_en("What\u2019s the doctor's 'plan'?") == ["what's", "the", "doctor's", "plan"]
    assert normalize_en("what's") != normalize_en("what is")  # contractions are not expanded


def test_chinese_is_characters_without_punctuation_and_no_script_folding() -> None:
    assert normalize_zh("你好，请介绍一下你自己。") == list("你好请介绍一下你自己")
    assert normalize_zh("我想 听 一个故事!") == list("我想听一个故事")
    assert normalize_zh("一個") != normalize_zh("一个")


def w(text: str) -> list[str]:
    return text.split(" ") if text else []


def test_edit_distance_counts_substitutions_insertions_and_deletions() -> None:
    assert edit_distance(w("a b c"), w("a b c")) == 0
    assert edit_distance(w("capital of france"), w("capital on france")) == 1
    assert edit_distance(w("a b c"), w("a c")) == 1
    assert edit_distance(w("a b"), w("a x b y")) == 2
    assert edit_distance([], ["a"]) == 1


def test_corpus_error_rate_weighs_utterances_by_their_length() -> None:
    pairs = [(w("a b c d e f g h i j"), w("a b c d e f g h i j")), (["stop"], ["top"])]
    assert error_rate(pairs) == pytest.approx(1 / 11)  # not the mean of 0% and 100%
    assert error_rate([]) == 0.0
