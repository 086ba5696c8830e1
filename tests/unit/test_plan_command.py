"""`voice-pipeline plan`: input the schema refuses, or an engine without a measured cost, is one
line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voice_operator.profiles import load_profile
from voice_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_sensevoice(tmp_path: Path) -> Path:
    profile = load_profile()
    profile.stages.pop("asr:sensevoice", None)
    path = tmp_path / "profile.json"
    path.write_text(profile.model_dump_json())
    return path


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--devices", "0"], "devices: Input should be greater than or equal to 1"),
        (["--devices", "20000"], "devices: Input should be less than or equal to 10000"),
        (["--devices", "60", "--max-nodes", "0"], "maxNodes: Input should be greater than or equal to 1"),
        (["--devices", "60", "--max-nodes", "101"], "maxNodes"),
        (["--node-size", "4c16g"], "--devices is required"),
        (["--spec", "/nonexistent.yaml"], "--spec /nonexistent.yaml"),
    ],
)
def test_invalid_input_is_one_line_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", *argv]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err
    assert len(out.err.strip().splitlines()) == 1 and says in out.err, out.err


def test_an_engine_without_cost_is_one_line_naming_it(
    no_sensevoice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "plan",
        "--devices",
        "60",
        "--asr-engine",
        "sensevoice",
        "--llm",
        "cloud",
        "--profile",
        str(no_sensevoice),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "asr:sensevoice" in err and "voice-pipeline calibrate --only asr:sensevoice" in err


def test_spec_file_and_options_are_planned_together(capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "plan",
            "--spec",
            str(ROOT / "crds/examples/full.yaml"),
            "--asr-engine",
            "whisper",
            "--output",
            "json",
        ]
    )
    status = json.loads(capsys.readouterr().out)
    assert status["targetDevices"] == 120 and status["nodeSize"] == "4c32g" and status["nodes"] == 2
    assert status["stages"]["asr"]["engine"] == "whisper" and status["stages"]["tts"]["engine"] == "edge"
    assert status["stages"]["llm"]["engine"] == "cloud"  # full.yaml's providers have base URLs


def test_compare_names_the_engines_it_planned(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--compare", "--devices", "60", "--llm", "cloud"]) == 0
    out = capsys.readouterr().out
    assert "engines: asr whisper, llm cloud, tts edge" in out
    assert out.count("60 devices") == 3


def test_calibrate_only_measures_those_entries_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voice_operator import calibrate
    from voice_pipeline.common.errors import ConfigError

    measured = {"unit": "request", "engines": ["llamacpp"], "cpu_seconds_per_unit": {"1": 1.5},
                "memory_mib_per_replica": 900.0}  # fmt: skip
    monkeypatch.setitem(calibrate.MEASURES, "llm:llamacpp", lambda: dict(measured))
    monkeypatch.setattr(calibrate, "measure_service_baseline", lambda: 74.0)
    out = tmp_path / "profile.json"
    out.write_text(load_profile().model_dump_json())
    calibrate.calibrate(out, ("llm:llamacpp",))
    written = json.loads(out.read_text())
    assert written["stages"]["llm:llamacpp"]["cpu_seconds_per_unit"] == {"1": 1.5}
    assert (
        written["stages"]["llm:llamacpp"]["measured"]["command"]
        == "voice-pipeline calibrate --only llm:llamacpp"
    )
    assert written["stages"]["asr"] == json.loads(load_profile().model_dump_json())["stages"]["asr"]  # kept
    with pytest.raises(ConfigError, match="cannot measure asr:paraformer"):
        calibrate.calibrate(out, ("asr:paraformer",))


def test_the_readme_shows_what_plan_compare_prints(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = "$ voice-pipeline plan --compare --devices 60 --llm cloud\n"
    shown = readme[readme.index(command) + len(command) :].split("```", 1)[0]
    main(["plan", "--compare", "--devices", "60", "--llm", "cloud"])
    assert capsys.readouterr().out == shown, "update the README's plan --compare block"
    local = "$ voice-pipeline plan --compare --devices 60\n...\n"
    shown_tail = readme[readme.index(local) + len(local) :].split("```", 1)[0]
    main(["plan", "--compare", "--devices", "60"])
    assert shown_tail in capsys.readouterr().out
