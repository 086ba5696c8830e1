"""`voice-pipeline serve [gateway|vad|asr|llm|tts]`: one command per process, each with --help."""

from __future__ import annotations

import pytest

from voice_pipeline.cli import build_parser, main


@pytest.mark.parametrize("stage", ["gateway", "vad", "asr", "llm", "tts"])
def test_each_stage_has_help_and_its_settings(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", stage, "--help"])
    assert exit_.value.code == 0
    assert "--help-settings" in capsys.readouterr().out
    assert main(["serve", stage, "--help-settings"]) == 0
    listed = capsys.readouterr().out
    section = "VP_STAGES__ASR_URL" if stage == "gateway" else f"VP_{stage.upper()}__QUEUE_SIZE"
    assert section in listed and ("VP_GATEWAY__PORT" if stage == "gateway" else "VP_SERVICE__PORT") in listed


def test_plain_serve_stays_the_all_in_one_server() -> None:
    args = build_parser().parse_args(["serve", "--port", "8001"])
    assert args.stage is None and args.port == 8001 and args.func.__name__ == "_serve"
    args = build_parser().parse_args(["serve", "asr", "--port", "9005", "--no-install"])
    assert (
        args.stage == "asr" and args.port == 9005 and args.no_install and args.func.__name__ == "_serve_stage"
    )


def test_a_gateway_without_stage_urls_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VP_STAGES__TTS_URL", raising=False)
    assert main(["serve", "gateway"]) == 2  # a configuration error: exit 2, as argparse does
    assert "VP_STAGES__TTS_URL" in capsys.readouterr().err


def test_numpy_blas_runs_on_one_thread_unless_set() -> None:
    """Every command sets it before numpy loads (OpenBLAS threads spun 0.1 CPU s per utterance
    away); an operator's own value is kept."""
    from voice_pipeline.cli import single_threaded_blas

    environ: dict[str, str] = {}
    single_threaded_blas(environ)
    assert environ == {"OPENBLAS_NUM_THREADS": "1"}
    environ = {"OPENBLAS_NUM_THREADS": "4"}
    single_threaded_blas(environ)
    assert environ == {"OPENBLAS_NUM_THREADS": "4"}


def test_openmp_threads_sleep_when_idle_unless_set() -> None:
    """Spinning OpenMP threads of a two-thread ASR call took CPU from the rest; an operator's own
    value is kept."""
    from voice_pipeline.cli import passive_openmp

    environ: dict[str, str] = {}
    passive_openmp(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    passive_openmp(environ)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE"}
