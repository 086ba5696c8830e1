"""The pure decisions that bound a bad utterance's decoding cost (issue 14, item 3)."""

from __future__ import annotations

from voice_pipeline.asr.decoding import choose_language, loop_start, token_cap


def test_token_cap_grows_with_duration_from_a_floor_up_to_the_ceiling() -> None:
    assert token_cap(0.0, 6.0, 8, 96) == 8
    assert token_cap(1.0, 6.0, 8, 96) == 14
    assert token_cap(2.5, 6.0, 8, 96) == 23  # 15 tokens for 2.5 s, rounded up
    assert token_cap(2.4, 6.0, 8, 96) == 23  # 14.4 -> 15
    assert token_cap(60.0, 6.0, 8, 96) == 96
    assert token_cap(-1.0, 6.0, 8, 96) == 8


def test_a_single_token_repeated_is_a_loop_cut_after_its_first_copy() -> None:
    tokens = [5, 6, 7] + [9] * 12
    assert loop_start(tokens) == 4  # keep 5 6 7 9


def test_a_repeated_phrase_is_a_loop_cut_after_one_copy() -> None:
    phrase = [21, 22, 23]
    tokens = [1, 2] + phrase * 4
    assert loop_start(tokens) == 5


def test_a_loop_cut_mid_pattern_keeps_one_whole_copy_from_where_it_began() -> None:
    one, tian = 10, 11  # "一天" repeated, the cap falling after a "一"
    tokens = [7, one, tian, one, tian, one, tian, one, tian, one]
    assert tokens[: loop_start(tokens)] == [7, one, tian]


def test_the_shortest_period_explains_the_loop() -> None:
    assert loop_start([1] + [3, 4] * 6) == 3


def test_short_repetitions_of_speech_are_not_loops() -> None:
    assert loop_start([10, 11, 11, 11]) is None  # "no no no": three tokens
    assert loop_start([1, 2, 3, 4, 5, 6, 7, 8]) is None
    assert loop_start([4, 5, 4, 5, 9]) is None  # the repetition is not at the end
    assert loop_start([]) is None


def test_a_sentence_said_again_to_the_cap_is_a_loop_cut_after_its_first_copy() -> None:
    sentence = list(range(100, 113))  # "Book a table for 4 at an Italian restaurant." (13 tokens)
    tokens = sentence * 2 + sentence[:11]  # the cap falls inside the third copy
    assert tokens[: loop_start(tokens)] == sentence


def test_a_sentence_loop_after_a_different_first_copy_keeps_that_copy_to_its_end() -> None:
    first = [7, 101, 102, 103, 104, 105, 106, 107, 108, 109]  # "turn off ... stairs." (lower case)
    again = [8, *first[1:]]  # "Turn off ... stairs."
    tokens = first + again * 2 + again[:4]
    period = 109  # "."
    assert tokens[: loop_start(tokens, sentence_ends={period})] == first
    # Without knowing where sentences end, the copy kept runs from "off" to the next "Turn".
    assert tokens[: loop_start(tokens)] == [*first, 8]


def test_a_long_pattern_needs_two_whole_copies_at_the_end() -> None:
    sentence = list(range(100, 112))
    assert loop_start(sentence + sentence[:6]) is None  # once and a half: not a loop
    assert loop_start(sentence * 2 + [1, 2, 3]) is None  # said twice, then something else
    assert loop_start([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 10]) is None


def test_a_confident_detection_picks_the_likeliest_allowed_language() -> None:
    scores = {"en": 0.85, "la": 0.05, "zh": 0.02}
    assert choose_language(scores, ["zh", "en"], "zh", 0.5) == ("en", True)


def test_an_unconfident_detection_falls_back_to_the_configured_language() -> None:
    noise = {"nn": 0.74, "ja": 0.11, "en": 0.06, "zh": 0.01}
    assert choose_language(noise, ["zh", "en"], "zh", 0.5) == ("zh", False)
    assert choose_language(noise, ["zh", "en"], "en", 0.5) == ("en", False)
    assert choose_language(noise, ["zh", "en"], "zh", 0.0) == ("en", True)  # no threshold: the likeliest
    assert choose_language({}, [], "en", 0.5) == ("en", False)
