"""The benchmark page and the capacity report render from a small result file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# Charts need matplotlib (the `bench` extra; `make test` installs it through test-prereqs).
from voice_pipeline.bench.docs import render
from voice_pipeline.bench.report import render_report
from voice_pipeline.bench.results import load_all, save


def _step(devices: int, p95: float, ok: bool) -> dict[str, Any]:
    dist = {"count": 10, "p50": p95 * 0.6, "p95": p95, "p99": p95 * 1.1, "mean": p95 * 0.7, "max": p95 * 1.2}
    proc = {
        "pid": 1,
        "cpu_seconds": 10.0,
        "cpu_cores": 0.02 * devices,
        "rss_mib_peak": 400.0,
        "rss_mib_mean": 390.0,
    }
    return {
        "devices": devices,
        "date": "2026-11-25T01:00:00Z",
        "load_average": {"before": [0.5, 0.4, 0.3], "after": [1.5, 0.9, 0.5]},
        "turns": devices * 4,
        "ok_turns": devices * 4,
        "success_ratio": 1.0,
        "first_audio_ms": dist,
        "stt_ms": {**dist, "p50": 200, "p95": 400},
        "first_token_ms": dist,
        "errors": {},
        "client": {"cpu_cores": 0.05, "loop_lag_ms": dist},
        "processes": {"server": proc, "llm-emulator": {**proc, "cpu_cores": 0.01, "rss_mib_peak": 60.0}},
        "system_cpu_cores": 0.02 * devices,
        "system_rss_mib": 400.0,
        "emulator_cpu_cores": 0.01,
        "stages": {
            s: {
                "requests": 40,
                "busy_seconds": 3.0,
                "busy_share": 0.05,
                "mean_batch": 1.5,
                "mean_latency_ms": 120.0,
            }
            for s in ("vad", "asr", "llm", "tts")
        },
        "meets_slo": ok,
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    record = {
        "kind": "capacity-search",
        "mode": "allinone",
        "date": "2026-11-25T01:10:00Z",
        "machine": {"cores": 2, "memory_gib": 23.5, "cpu": "Test CPU", "kernel": "6", "python": "3.11"},
        "commit": "abc1234",
        "models": {"vad": "silero-vad", "asr": "whisper-base", "llm": "emulator", "tts": "emulator"},
        "providers": {
            "llm": {"describe": "LLM: first token 400 ms"},
            "tts": {"describe": "TTS: first audio 250 ms"},
        },
        "slo_ms": 2000.0,
        "note": "measured on a test fixture",
        "floor": _step(1, 950, True),
        "steps": [_step(8, 1200, True), _step(12, 1500, True), _step(18, 2600, False)],
        "supported_devices": 12,
        "profiled_step": {
            **_step(12, 1500, True),
            "profiles": {
                "server": {
                    "samples": 100,
                    "idle_samples": 20,
                    "self": [{"function": "encode (opuslib/api/encoder.py)", "samples": 30, "share": 0.3}],
                    "areas": [{"function": "opuslib", "samples": 30, "share": 0.3}],
                    "inclusive_ours": [
                        {"function": "synthesize (voice_pipeline/tts/stage.py)", "samples": 40, "share": 0.4}
                    ],
                }
            },
        },
    }
    directory = tmp_path / "results"
    save(record, directory)
    (directory / "not-a-search.json").write_text(json.dumps({"kind": "other"}))
    return directory


def test_benchmarks_page_has_table_plots_model_check_and_profile(results: Path, tmp_path: Path) -> None:
    records = load_all(results)
    assert len(records) == 1
    doc = tmp_path / "docs" / "benchmarks.md"
    text = render(records, tmp_path / "docs" / "img", doc, conditions="2 cores shared with 5 other jobs")
    assert doc.read_text() == text
    assert "## allinone: 12 devices supported" in text
    assert "2 cores shared with 5 other jobs" in text
    assert text.count("| 2026-11-25 01:00 | allinone |") == 4  # floor + three steps
    assert "1.5 0.9 0.5" in text  # load average recorded with each row
    assert "abc1234" in text and "whisper-base" in text and "first token 400 ms" in text
    assert "capacity model" in text and "difference (measured - predicted)" in text
    assert "0.0200 cores per device" in text and "full at **100 devices**" in text
    assert "`opuslib`" in text
    assert "| llm-emulator | provider emulator (not the system) |" in text
    assert "No distributed run recorded yet." in text
    for png in ("bench-allinone-latency.png", "bench-allinone-cpu.png"):
        assert (tmp_path / "docs" / "img" / png).read_bytes()[:4] == b"\x89PNG"


def test_capacity_report_covers_stages_node_sizes_and_measurement(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "docs" / "capacity-report.md"
    text = render_report(load_all(results), out, target=60)
    for heading in ("## Stages", "## Node sizes", "## Measured on this machine", "### Model check"):
        assert heading in text
    assert "| supported devices |" in text and "4c8g" in text and "4c32g" in text
    assert "Bottleneck: asr" in text
    assert "supported devices: **12**" in text
    for png in ("report-stage-capacity.png", "report-node-sizes.png", "report-allinone-latency.png"):
        assert (out.parent / "img" / png).read_bytes()[:4] == b"\x89PNG"


def test_report_without_benchmarks_says_how_to_get_them(tmp_path: Path) -> None:
    text = render_report([], tmp_path / "r.md")
    assert "run `make bench`" in text


def test_a_corrupt_result_file_is_a_clear_error(tmp_path: Path) -> None:
    from voice_pipeline.common.errors import ConfigError

    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        load_all(tmp_path)


def test_the_report_sets_sensevoice_beside_the_seed_and_says_its_weights_are_random(tmp_path: Path) -> None:
    from voice_operator.profiles import load_profile
    from voice_pipeline.bench.report import SEED, sensevoice_lines

    text = "\n".join(sensevoice_lines(None, 60))
    assert "ARCHITECTURE-ONLY, RANDOM WEIGHTS" in text and "transcripts meaningless" in text
    assert all(SEED[size] in text for size in ("4c8g", "4c16g", "4c32g"))
    assert "| SenseVoiceSmall int8 (ours, measured, planned) |" in text and "Why ours differs" in text
    profile = load_profile()
    del profile.stages["asr:sensevoice"]
    path = tmp_path / "p.json"
    path.write_text(profile.model_dump_json())
    assert "make calibrate-sensevoice" in "\n".join(sensevoice_lines(str(path), 60))


def test_a_profile_the_model_cannot_plan_with_is_recorded_not_raised(tmp_path: Path) -> None:
    from voice_pipeline.bench.commands import _predictions
    from voice_pipeline.bench.docs import predictions

    incomplete = tmp_path / "profile.json"  # the shipped profile without the TTS cost the bench runs
    shipped = json.loads(
        (Path(__file__).parents[2] / "operator/voice_operator/data/cost-profile.json").read_text()
    )
    shipped["stages"].pop("tts:pcm")
    incomplete.write_text(json.dumps(shipped))
    machine = {"cores": 2, "memory_gib": 23.5, "cpu": "Test CPU"}
    out = _predictions(machine, str(incomplete))
    assert "no measured cost for tts:openai" in out[f"cost profile {incomplete}"]["error"]
    assert out["shipped cost profile"]["plan_supported_devices"] > 0
    # The docs use the predictions that worked.
    assert list(predictions({"machine": machine, "predictions": out})) == ["shipped cost profile"]


def test_turn_steps_are_the_mean_of_each_step_over_the_bench_step() -> None:
    from voice_pipeline.bench.metrics import turn_steps

    def sample(n: float, asr_s: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            ("voice_turn_step_seconds_count", (("step", "asr"),)): n,
            ("voice_turn_step_seconds_sum", (("step", "asr"),)): asr_s,
        }

    steps = turn_steps(sample(4, 1.0), sample(6, 1.5))  # two more turns, 0.5 s of ASR between them
    assert steps["asr"] == {"count": 2, "mean_ms": 250.0}
    assert steps["send"] == {"count": 0, "mean_ms": None}


def test_the_breakdown_separates_the_emulated_providers_time_from_ours() -> None:
    from voice_pipeline.bench.docs import breakdown_lines

    means = {
        "silence": 350, "vad": 20, "asr": 150, "llm_first_token": 410, "first_sentence": 120,
        "tts_first_audio": 262, "send": 3, "encode": 2,
    }  # fmt: skip
    record: dict[str, Any] = {
        "providers": {
            "llm": {"emulator": {"ttft_ms": 400.0}},
            "tts": {"emulator": {"first_audio_ms": 250.0}},
        },
        "floor": {"turn_steps": {k: {"count": 5, "mean_ms": v} for k, v in means.items()}},
    }
    text = "\n".join(breakdown_lines(record))
    assert "| LLM first token (history, cache look-up, request, model) | 410 | 400 | 10 |" in text
    assert "| LLM writing the first sentence | 120 | 120 | 0 |" in text
    # ours: 350 + 20 + 150 + 10 + 0 + 12 + 3; all: the seven steps (encode is inside TTS)
    assert "| **total** (last voiced frame -> first frame sent) | **1315** | | **545** |" in text
    assert "Opus encoding of a sentence's first chunk: 2 ms" in text
    local = {**record, "providers": {"llm": {"describe": "llama.cpp"}, "tts": {"describe": "piper"}}}
    assert "| **1315** | | **1315** |" in "\n".join(breakdown_lines(local))  # a local model's time is ours
    assert "no per-step times" in "\n".join(breakdown_lines({"floor": _step(1, 900, True)}))


def test_a_reply_begun_inside_the_silence_shows_as_a_negative_share() -> None:
    from voice_pipeline.bench.docs import breakdown_lines

    means = {
        "silence": 450, "vad": 5, "asr": 0, "llm_first_token": 250, "first_sentence": 74,
        "tts_first_audio": 256, "send": 1,
    }  # fmt: skip
    record: dict[str, Any] = {
        "providers": {
            "llm": {"emulator": {"ttft_ms": 400.0}},
            "tts": {"emulator": {"first_audio_ms": 250.0}},
        },
        "floor": {
            "turn_steps": {k: {"count": 5, "mean_ms": v} for k, v in means.items()},
            "early": {"asr": {"used": 5, "dropped": 1}, "reply": {"used": 5, "dropped": 0}},
        },
    }
    text = "\n".join(breakdown_lines(record))
    assert "| LLM first token (history, cache look-up, request, model) | 250 | 400 | -150 |" in text
    # ours: the whole wait (1036) less the providers' 400 + 74 + 250
    assert "| **1036** | | **312** |" in text
    assert "A negative share" in text and "replies used 5 / dropped 0" in text
