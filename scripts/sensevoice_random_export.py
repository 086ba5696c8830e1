"""SenseVoiceSmall's architecture with random weights, exported as funasr-onnx loads it.

No package here ships SenseVoiceSmall's weights, but its architecture is public. This builds it
with FunASR's own model code (funasr.models.sense_voice: SenseVoiceSmall + SenseVoiceEncoderSmall,
the hyper-parameters of iic/SenseVoiceSmall's config.yaml), seeds the weights, and exports it with
FunASR's own exporter (funasr.utils.export_utils: model.onnx, and model_quant.onnx quantized to
int8 the way FunASR does it), beside the files `funasr_onnx.SenseVoiceSmall` reads: config.yaml,
am.mvn (identity CMVN over the 560 LFR inputs) and a 25055-piece sentencepiece model.

The cost is real (the same graph, shapes and kernels); the transcripts are meaningless.

Runs in its own venv (torch + funasr), not the project's: `make sensevoice-random`.
    python scripts/sensevoice_random_export.py OUTPUT_DIR
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

VOCAB = 25055  # the CTC head of iic/SenseVoiceSmall
MEL, LFR_M, LFR_N = 80, 7, 6
FEATURES = MEL * LFR_M  # 560 inputs after low-frame-rate stacking
ENCODER_CONF = {
    "output_size": 512,
    "attention_heads": 4,
    "linear_units": 2048,
    "num_blocks": 50,
    "tp_blocks": 20,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
    "input_layer": "pe",
    "pos_enc_class": "SinusoidalPositionEncoder",
    "normalize_before": True,
    "kernel_size": 11,
    "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}
CONFIG = {
    "encoder": "SenseVoiceEncoderSmall",
    "encoder_conf": ENCODER_CONF,
    "model": "SenseVoiceSmall",
    "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
    "tokenizer": "SentencepiecesTokenizer",
    "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
    "frontend": "WavFrontend",
    "frontend_conf": {
        "fs": 16000,
        "window": "hamming",
        "n_mels": MEL,
        "frame_length": 25,
        "frame_shift": 10,
        "lfr_m": LFR_M,
        "lfr_n": LFR_N,
        "cmvn_file": None,
    },
}
PROVENANCE = (
    "SenseVoiceSmall ARCHITECTURE-ONLY, RANDOM WEIGHTS (seed 0): cost real, transcripts meaningless. "
    "Built with funasr {funasr} model code (SenseVoiceEncoderSmall 512/4 heads/2048, 50+20 blocks, SANM "
    "kernel 11, LFR 7x6 over 80 mel = 560 inputs, 25055-token CTC) and exported by funasr's exporter "
    "(scripts/sensevoice_random_export.py)."
)


def write_cmvn(path: Path) -> None:
    """Kaldi nnet CMVN as FunASR writes am.mvn: shift 0, scale 1 (identity; cost is the same)."""
    zeros = " ".join(["0"] * FEATURES)
    ones = " ".join(["1"] * FEATURES)
    path.write_text(
        f"<Nnet>\n<Splice> {FEATURES} {FEATURES}\n[ 0 ]\n"
        f"<AddShift> {FEATURES} {FEATURES}\n<LearnRateCoef> 0 [ {zeros} ]\n"
        f"<Rescale> {FEATURES} {FEATURES}\n<LearnRateCoef> 0 [ {ones} ]\n</Nnet>\n"
    )


def write_tokenizer(path: Path) -> None:
    """A character sentencepiece model with exactly VOCAB pieces, so every id the CTC head can emit
    decodes (the real one is a BPE over zh/ja/yue/en/ko; decoding cost is negligible either way)."""
    import sentencepiece as spm

    # CJK Unified Ideographs and Extension A: more distinct characters than pieces needed.
    chars = [chr(c) for c in [*range(0x4E00, 0xA000), *range(0x3400, 0x4DC0)]]
    corpus = path.with_suffix(".txt")
    corpus.write_text("\n".join("".join(chars[i : i + 64]) for i in range(0, len(chars), 64)) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(path.with_suffix("")),
        vocab_size=VOCAB,
        model_type="char",
        character_coverage=1.0,
        minloglevel=2,
    )
    corpus.unlink()
    path.with_suffix(".vocab").unlink(missing_ok=True)


def main(output: Path) -> None:
    import funasr
    import torch
    import yaml
    from funasr.models.sense_voice.model import SenseVoiceSmall
    from funasr.utils.export_utils import export

    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = SenseVoiceSmall(
        encoder=CONFIG["encoder"],
        encoder_conf=ENCODER_CONF,
        input_size=FEATURES,
        vocab_size=VOCAB,
        **CONFIG["model_conf"],
    )
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"SenseVoiceSmall (random weights): {params / 1e6:.1f} M parameters", file=sys.stderr)
    # FunASR's exporter calls torch.onnx.export without `dynamo`; torch >= 2.9 then takes the dynamo
    # exporter, which FunASR's export wrappers were not written for: keep the TorchScript one.
    torch.onnx.export = functools.partial(torch.onnx.export, dynamo=False)
    # init_param: the exporter derives a default output directory from it even when given one.
    export(
        model, quantize=True, opset_version=14, type="onnx", output_dir=str(output), device="cpu",
        init_param=str(output / "model.pt"),
    )  # fmt: skip
    (output / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    write_cmvn(output / "am.mvn")
    write_tokenizer(output / "chn_jpn_yue_eng_ko_spectok.bpe.model")
    (output / "PROVENANCE.txt").write_text(
        PROVENANCE.format(funasr=funasr.__version__) + f" {params / 1e6:.1f} M parameters.\n"
    )
    for name in ("model.onnx", "model_quant.onnx"):
        print(f"{output / name}: {(output / name).stat().st_size / 2**20:.0f} MiB", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
