"""SenseVoiceSmall through funasr-onnx, from a local model directory (the production ASR).

funasr-onnx fails confusingly when files are missing (ImportError "please install modelscope" for
a missing directory, or a ModelScope retry loop for a hub name). This module checks the directory
itself first and raises one clear ModelMissingError instead; it never contacts a hub.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from voice_pipeline.asr.engine import AsrItem, clean_text
from voice_pipeline.common.errors import ModelMissingError
from voice_pipeline.common.stages import Transcript

REQUIRED = ("config.yaml", "am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model")
_TAGS = re.compile(r"<\|[^|]*\|>")
_LANGS = {"zh": "zh", "en": "en", "auto": "auto"}


def check_model_dir(model_dir: Path, quantized: bool) -> None:
    weights = "model_quant.onnx" if quantized else "model.onnx"
    missing = [f for f in (weights, *REQUIRED) if not (model_dir / f).is_file()]
    if missing:
        raise ModelMissingError(
            "sensevoice-small",
            f"{model_dir} lacks {', '.join(missing)} (export iic/SenseVoiceSmall with FunASR on a machine "
            "with internet and copy the directory here, or set VP_ASR__SENSEVOICE_DIR)",
            "voice-pipeline models list",
        )


def _pcm_batch(wav_content: object, fs: int | None = None) -> list[object]:
    return list(wav_content) if isinstance(wav_content, list) else [wav_content]


class SenseVoiceEngine:
    name = "sensevoice"

    def __init__(
        self, model_dir: Path, threads: int = 2, quantized: bool = True, batch_size: int = 8
    ) -> None:
        check_model_dir(model_dir, quantized)
        try:
            from funasr_onnx import SenseVoiceSmall
        except ImportError as exc:
            raise ModelMissingError(
                "sensevoice-small",
                f"funasr-onnx is not installed ({exc})",
                "pip install 'voice-pipeline[sensevoice]'",
            ) from exc
        self._model = SenseVoiceSmall(
            model_dir=str(model_dir), batch_size=batch_size, quantize=quantized, intra_op_num_threads=threads
        )
        # funasr-onnx 0.4.3 batches only a list of file *paths* (a list of arrays fails in its
        # load_wav: "'numpy.ndarray' object has no attribute 'lower'"); ours are decoded PCM already.
        self._model.load_data = _pcm_batch  # type: ignore[method-assign]

    def transcribe_batch(self, items: Sequence[AsrItem]) -> list[Transcript]:
        if not items:
            return []
        # funasr-onnx takes one language per call: group the batch by language.
        out: list[Transcript | None] = [None] * len(items)
        for lang in {item.language for item in items}:
            idx = [i for i, item in enumerate(items) if item.language == lang]
            texts = self._model(
                [items[i].pcm for i in idx], language=_LANGS.get(lang, "auto"), textnorm="withitn"
            )
            for i, text in zip(idx, texts, strict=True):
                out[i] = Transcript(clean_text(_TAGS.sub("", str(text))), lang, items[i].seconds)
        return [t for t in out if t is not None]
