"""faster-whisper (CTranslate2) with real cross-utterance batching.

faster-whisper's `transcribe` handles one audio at a time. Here the utterances of many sessions are
turned into log-mel features, padded to Whisper's 30 s window, encoded in ONE encoder call and
decoded in ONE `generate` call with a per-item prompt (forced language, no timestamps, length cap).
Utterances are short (a few seconds), so a single window covers each.

The encoder's cost is proportional to the window, not to the speech: CTranslate2 accepts windows
shorter than Whisper's 30 s, and a 10 s window encodes ~4x faster with the same transcripts on our
clips (measured: 0.61 s -> 0.15 s per clip, 2 threads). Much shorter windows make Whisper repeat
itself, so the window is max(`min_window_s`, longest utterance in the batch), in 5 s steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voice_pipeline.asr.engine import AsrItem, clean_text
from voice_pipeline.common.errors import ModelMissingError
from voice_pipeline.common.stages import Transcript

log = logging.getLogger(__name__)
MAX_SECONDS = 30.0
FRAMES_PER_SECOND = 100  # Whisper log-mel hop: 10 ms
WINDOW_STEP_S = 5


class WhisperEngine:
    name = "whisper"

    def __init__(
        self,
        model_dir: Path,
        threads: int = 2,
        beam_size: int = 1,
        max_decode_tokens: int = 96,
        languages: Sequence[str] = ("zh", "en"),
        min_window_s: float = 10.0,
        workers: int = 1,
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
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=workers
        )
        self._pad_or_trim = pad_or_trim
        self._tokenizers = {
            lang: Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, "transcribe", lang)
            for lang in {*languages, "zh", "en"}
        }
        self.languages = list(languages)
        self.beam_size = beam_size
        self.max_decode_tokens = max_decode_tokens
        self.min_window_s = min_window_s

    def _window_frames(self, items: Sequence[AsrItem]) -> int:
        longest = max(item.seconds for item in items)
        seconds = max(self.min_window_s, -(-longest // WINDOW_STEP_S) * WINDOW_STEP_S)
        return int(min(MAX_SECONDS, seconds) * FRAMES_PER_SECOND)

    def _features(self, item: AsrItem, frames: int) -> npt.NDArray[np.float32]:
        pcm = item.pcm[: int(MAX_SECONDS * 16000)]
        features = self._model.feature_extractor(pcm)[..., :-1]
        return np.asarray(self._pad_or_trim(features, frames), dtype=np.float32)

    def _pick_languages(self, encoded: object, items: Sequence[AsrItem]) -> list[str]:
        """Forced languages stay; `auto` picks the likeliest of the allowed languages."""
        todo = [i for i, item in enumerate(items) if item.language == "auto"]
        chosen = [item.language for item in items]
        if todo:
            detections = self._model.model.detect_language(encoded)
            for i in todo:
                scores = {token.strip("<|>"): p for token, p in detections[i]}
                chosen[i] = max(self.languages, key=lambda lang: scores.get(lang, 0.0))
        return chosen

    def transcribe_batch(self, items: Sequence[AsrItem]) -> list[Transcript]:
        if not items:
            return []
        import ctranslate2

        frames = self._window_frames(items)
        features = np.stack([self._features(item, frames) for item in items])
        encoded = self._model.model.encode(ctranslate2.StorageView.from_array(features))
        languages = self._pick_languages(encoded, items)
        prompts = []
        for lang in languages:
            tokenizer = self._tokenizers.get(lang) or self._tokenizers["en"]
            prompts.append([*tokenizer.sot_sequence, tokenizer.no_timestamps])
        results = self._model.model.generate(
            encoded,
            prompts,
            beam_size=self.beam_size,
            max_length=self.max_decode_tokens,
            suppress_blank=True,
            suppress_tokens=[-1],
            repetition_penalty=1.1,
            no_repeat_ngram_size=4,
        )
        transcripts = []
        for item, lang, result in zip(items, languages, results, strict=True):
            tokenizer = self._tokenizers.get(lang) or self._tokenizers["en"]
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            transcripts.append(Transcript(clean_text(tokenizer.decode(tokens)), lang, item.seconds))
        return transcripts
