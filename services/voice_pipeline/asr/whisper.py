"""faster-whisper (CTranslate2) with real cross-utterance batching.

faster-whisper's `transcribe` handles one audio at a time. Here the utterances of many sessions are
turned into log-mel features, padded to Whisper's 30 s window, encoded in ONE encoder call and
decoded in ONE `generate` call with a per-item prompt (forced language, no timestamps, length cap).
Utterances are short (a few seconds), so a single window covers each.

The encoder's cost is proportional to the window, not to the speech: CTranslate2 accepts windows
shorter than Whisper's 30 s, and a 10 s window encodes ~4x faster with the same transcripts on our
clips (measured: 0.61 s -> 0.15 s per clip, 2 threads), and 5 s costs 30% less again for 0.5
points of WER (asr/settings.py). Much shorter windows make Whisper repeat itself, so the window is
max(`min_window_s`, longest utterance in the batch), in 5 s steps.

Bad audio is bounded (issue 14, item 3; the decisions are pure functions in `decoding.py`): each
utterance may decode at most `token_cap(seconds)` tokens, and a transcript that reaches it ending
in a repetition loop keeps one copy of the repeated part; under `auto`, a language detection that
gives no allowed language `language_min_probability` decodes in the device's language (the
request's `fallback`) or else `fallback_language`, with the
repetition penalty and n-gram ban that stop loops (not used on confidently placed speech: they cost
it accuracy).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voice_pipeline.asr.decoding import choose_language, loop_start, token_cap
from voice_pipeline.asr.engine import AsrItem, clean_text
from voice_pipeline.asr.settings import (
    LANGUAGE_MIN_PROBABILITY,
    NO_REPEAT_NGRAM,
    REPETITION_PENALTY,
    TOKENS_PER_SECOND,
)
from voice_pipeline.common.cpus import cpu_budget
from voice_pipeline.common.errors import ModelMissingError
from voice_pipeline.common.stages import Transcript

log = logging.getLogger(__name__)
MAX_SECONDS = 30.0
FRAMES_PER_SECOND = 100  # Whisper log-mel hop: 10 ms
WINDOW_STEP_S = 5
COMPUTE_TYPE = "int8"  # both copies of the model (see Lanes) load the same weights the same way


def ct2_max_length(tokens: int) -> int:
    """CTranslate2's `max_length` for at most `tokens` output tokens. Measured on CTranslate2 4.8.5
    (whisper-base): a sequence stops at max_length / 2 tokens, forced prefix included (10 -> 5,
    96 -> 48, 448 -> 224, with or without a prefix), so the option is twice the tokens wanted."""
    return 2 * tokens


SENTENCE_END_MARKS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # . ? ! and the CJK full-width ones


def sentence_end_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of the text tokens that end a sentence (".", " ?", "。", "...", ")." ...): where the
    loop stop may cut a repeated sentence (decoding.loop_start). ~50k short decodes, ~0.1 s once."""
    return frozenset(
        i for i in range(tokenizer.eot) if tokenizer.decode([i]).rstrip().endswith(SENTENCE_END_MARKS)
    )


# A call runs alone only if ASR was idle this long before it: near capacity calls follow each other
# closely, and there the second copy's extra CPU (~17% a call) costs more than its speed gains.
SOLO_IDLE_S = 0.3


class Lanes:
    """Which copy of the model a call runs on: the solo copy (more threads) when no other call is
    in flight and none ended in the last `idle_s`, else the shared one (`workers` calls at once,
    `threads` each).

    Why two copies: CTranslate2 fixes a model's threads per call when it loads. On batches of one,
    two threads cut a call's wall time by a third on an AVX2-only EPYC (332 -> 215 ms, whisper-base,
    5 s window, 60 test-set clips) for ~17% more CPU, but two calls of two threads on two cores
    made every thread of the server wait (fleet benchmark, 36 devices: p95 first audio 3159 against
    2775 ms), and solo calls whenever none other was in flight still cost p50 first audio at 24
    devices (1341 / 1185 against 1133 / 1107 ms). So the extra threads go only to a call that
    finds ASR idle for SOLO_IDLE_S: the floor at low load, the same work as before near capacity.
    Callers are the batcher's worker threads."""

    def __init__(self, shared: Any, solo: Any | None, idle_s: float = SOLO_IDLE_S) -> None:
        self._shared = shared
        self._solo = solo
        self._idle_s = idle_s
        self._inflight = 0
        self._last_end = -math.inf
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def take(self) -> Iterator[Any]:
        with self._lock:
            now = time.monotonic()
            alone = self._solo is not None and self._inflight == 0 and now - self._last_end >= self._idle_s
            self._inflight += 1
        try:
            yield self._solo if alone else self._shared
        finally:
            with self._lock:
                self._inflight -= 1
                self._last_end = time.monotonic()


class WhisperEngine:
    name = "whisper"

    def __init__(
        self,
        model_dir: Path,
        threads: int = 2,
        solo_threads: int = 0,
        beam_size: int = 1,
        max_decode_tokens: int = 96,
        languages: Sequence[str] = ("zh", "en"),
        min_window_s: float = 10.0,
        workers: int = 1,
        repetition_penalty: float = REPETITION_PENALTY,
        no_repeat_ngram_size: int = NO_REPEAT_NGRAM,
        tokens_per_second: float = TOKENS_PER_SECOND,
        cap_floor_tokens: int = 8,
        stop_loops: bool = True,
        language_min_probability: float = LANGUAGE_MIN_PROBABILITY,
        fallback_language: str = "",
        guard_repetition_penalty: float = 1.1,
        guard_no_repeat_ngram_size: int = 4,
    ) -> None:
        if not (model_dir / "model.bin").is_file():
            raise ModelMissingError(
                model_dir.name,
                f"{model_dir}/model.bin not found",
                f"voice-pipeline models install {model_dir.name}",
            )
        from faster_whisper import WhisperModel
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        # num_workers: CTranslate2 runs that many calls at once (the batcher's `workers`).
        self._model = WhisperModel(
            str(model_dir), device="cpu", compute_type=COMPUTE_TYPE, cpu_threads=threads, num_workers=workers
        )
        self._lanes = Lanes(self._model.model, self._solo_model(model_dir, threads, solo_threads))
        self._pad_or_trim = pad_or_trim
        self._tokenizers = {
            lang: Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, "transcribe", lang)
            for lang in {*languages, "zh", "en"}
        }
        self._sentence_ends = sentence_end_ids(self._tokenizers["en"])
        self.languages = list(languages)
        self.beam_size = beam_size
        self.max_decode_tokens = max_decode_tokens
        self.min_window_s = min_window_s
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.tokens_per_second = tokens_per_second  # 0: no duration cap, only max_decode_tokens
        self.cap_floor_tokens = cap_floor_tokens
        self.stop_loops = stop_loops
        self.language_min_probability = language_min_probability
        self.fallback_language = fallback_language or self.languages[0]
        # Decoding of utterances whose language detection fell back: the loop guards that cost
        # real speech 1.9 WER points (docs/benchmarks.md) but stop unplaceable audio looping.
        self.guard_repetition_penalty = guard_repetition_penalty
        self.guard_no_repeat_ngram_size = guard_no_repeat_ngram_size
        # Per item of the last batch, for benchmarks that call one batch at a time (with several
        # workers these are whichever batch finished last).
        self.last_detections: list[dict[str, float]] = []
        self.last_token_counts: list[int] = []  # tokens decoded (the cost), before loop repeats are cut

    @staticmethod
    def _solo_model(model_dir: Path, threads: int, solo_threads: int) -> Any:
        """A second copy of the model with `solo_threads` threads for calls that run alone, when
        this process can use that many cores (a Pod's CPU limit can be lower); else None."""
        threads_alone = min(solo_threads, int(cpu_budget()))
        if threads_alone <= threads:
            return None
        import ctranslate2

        log.info("ASR: a call that runs alone decodes on %d threads (others on %d)", threads_alone, threads)
        return ctranslate2.models.Whisper(
            str(model_dir),
            device="cpu",
            compute_type=COMPUTE_TYPE,
            intra_threads=threads_alone,
            inter_threads=1,
        )

    def _tokenizer(self, language: str) -> Any:
        """The tokenizer (special tokens included) of a language, English for one not loaded."""
        return self._tokenizers.get(language) or self._tokenizers["en"]

    def _window_frames(self, items: Sequence[AsrItem]) -> int:
        longest = max(item.seconds for item in items)
        seconds = max(self.min_window_s, -(-longest // WINDOW_STEP_S) * WINDOW_STEP_S)
        return int(min(MAX_SECONDS, seconds) * FRAMES_PER_SECOND)

    def _features(self, item: AsrItem, frames: int) -> npt.NDArray[np.float32]:
        pcm = item.pcm[: int(MAX_SECONDS * 16000)]
        features = self._model.feature_extractor(pcm)[..., :-1]
        return np.asarray(self._pad_or_trim(features, frames), dtype=np.float32)

    def _pick_languages(
        self, model: Any, encoded: object, items: Sequence[AsrItem]
    ) -> tuple[list[str], list[bool]]:
        """(language, guarded) per item: forced languages stay; `auto` picks the likeliest allowed
        language, or falls back (guarded: decode with the loop guards) when none is likely."""
        todo = [i for i, item in enumerate(items) if item.language == "auto"]
        chosen = [item.language for item in items]
        detections_out: list[dict[str, float]] = [{} for _ in items]
        guarded = [False] * len(items)
        if todo:
            detections = model.detect_language(encoded)
            for i in todo:
                scores = {token.strip("<|>"): p for token, p in detections[i]}
                detections_out[i] = {lang: scores.get(lang, 0.0) for lang in self.languages}
                fallback = (
                    items[i].fallback if items[i].fallback in self.languages else self.fallback_language
                )
                chosen[i], confident = choose_language(
                    scores, self.languages, fallback, self.language_min_probability
                )
                guarded[i] = not confident
        self.last_detections = detections_out
        return chosen, guarded

    def _caps(self, items: Sequence[AsrItem]) -> list[int]:
        """Most tokens per item: floor + rate x seconds, never above max_decode_tokens."""
        if self.tokens_per_second <= 0:
            return [self.max_decode_tokens] * len(items)
        rate, floor = self.tokens_per_second, self.cap_floor_tokens
        return [token_cap(item.seconds, rate, floor, self.max_decode_tokens) for item in items]

    def _generate(
        self, model: Any, encoded: object, prompts: list[list[int]], tokens: int, guarded: bool = False
    ) -> list[list[int]]:
        penalty, ngram = (
            (self.guard_repetition_penalty, self.guard_no_repeat_ngram_size)
            if guarded
            else (self.repetition_penalty, self.no_repeat_ngram_size)
        )
        results = model.generate(
            encoded,
            prompts,
            beam_size=self.beam_size,
            max_length=ct2_max_length(tokens),
            suppress_blank=True,
            suppress_tokens=[-1],
            repetition_penalty=penalty,
            no_repeat_ngram_size=ngram,
        )
        return [list(r.sequences_ids[0]) for r in results]

    def _decode(
        self,
        model: Any,
        encoded: object,
        items: Sequence[AsrItem],
        languages: Sequence[str],
        guard: Sequence[bool],
    ) -> list[list[int]]:
        """Token ids per item (no special tokens), within each item's cap, loop repeats cut.

        One generate call for the batch, up to the largest cap. CTranslate2's Whisper has no
        per-token callback, so a loop cannot be interrupted mid-call; continuing a first, shorter
        pass with the tokens as a prefix re-decodes the prefix token by token (measured: reversed
        English, 6.5 s, 1.23 CPU s in two passes against 0.72 s in one), so the duration cap is
        the stop and the loop's repeats are dropped from a transcript that reached it."""
        import ctranslate2

        tokenizers = [self._tokenizer(lang) for lang in languages]
        prompts = [[*t.sot_sequence, t.no_timestamps] for t in tokenizers]
        caps = self._caps(items)
        guarded = [i for i, g in enumerate(guard) if g]
        if not guarded:
            out = self._generate(model, encoded, prompts, max(caps))
        else:
            # Unplaceable audio (the detection fell back) decodes apart, with the loop guards: a
            # separate call, since CTranslate2 takes one penalty per call. Such items are rare.
            out = [[] for _ in items]
            array = np.asarray(encoded)
            plain = [i for i in range(len(items)) if i not in guarded]
            for group, with_guards in ((plain, False), (guarded, True)):
                if not group:
                    continue
                sub = ctranslate2.StorageView.from_array(np.ascontiguousarray(array[group]))
                got = self._generate(
                    model, sub, [prompts[i] for i in group], max(caps[i] for i in group), with_guards
                )
                for i, ids in zip(group, got, strict=True):
                    out[i] = ids
        self.last_token_counts = [min(len(ids), cap) for ids, cap in zip(out, caps, strict=True)]
        for i, ids in enumerate(out):
            ids = ids[: caps[i]]
            reached_cap = self.stop_loops and len(ids) >= caps[i]
            start = loop_start(ids, sentence_ends=self._sentence_ends) if reached_cap else None
            out[i] = ids if start is None else ids[:start]
        return out

    def transcribe_batch(self, items: Sequence[AsrItem]) -> list[Transcript]:
        if not items:
            return []
        import ctranslate2

        frames = self._window_frames(items)
        features = np.stack([self._features(item, frames) for item in items])
        with self._lanes.take() as model:
            encoded = model.encode(ctranslate2.StorageView.from_array(features))
            languages, guard = self._pick_languages(model, encoded, items)
            decoded = self._decode(model, encoded, items, languages, guard)
        return self._transcripts(items, languages, decoded)

    def _transcripts(
        self, items: Sequence[AsrItem], languages: Sequence[str], decoded: Sequence[list[int]]
    ) -> list[Transcript]:
        transcripts = []
        for item, lang, ids in zip(items, languages, decoded, strict=True):
            tokenizer = self._tokenizer(lang)
            tokens = [t for t in ids if t < tokenizer.eot]
            transcripts.append(Transcript(clean_text(tokenizer.decode(tokens)), lang, item.seconds))
        return transcripts
