"""A short fleet against the real all-in-one server with emulated providers, measured the way
`make bench` measures (the full search runs only in `make bench`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voice_pipeline.bench.rig import Rig
from voice_pipeline.bench.runner import StepPlan, run_step

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with Rig("allinone", tmp_path_factory.mktemp("fleet")) as running:
        yield running


def test_three_devices_for_twenty_seconds(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp("fleet-step")
    step = run_step(rig, 3, StepPlan(duration_s=20, ramp_s=3, seed=1), work, profile_s=5)
    detail = f"{step}\n{(work / 'fleet.log').read_text(errors='replace')[-2000:]}"
    # Every device talked: 3-8 s think time and ~10 s turns give each device at least two turns.
    assert step["turns"] >= 5, detail
    assert step["success_ratio"] == 1.0, detail
    assert step["first_audio_ms"]["p50"] is not None and step["stt_ms"]["p95"] is not None
    # Both languages were spoken (seeded clip choice) and every turn reached ASR and the LLM.
    assert {name[:2] for name in step["clips"]} == {"en", "zh"}, step["clips"]
    assert step["stages"]["asr"]["requests"] >= step["turns"]
    assert step["stages"]["llm"]["requests"] >= step["turns"]
    # Measurements of every process: the system, the emulators (apart) and the load generator.
    server = step["processes"]["server"]
    assert server["cpu_seconds"] > 0 and 100 < server["rss_mib_peak"] < 4096
    assert step["processes"]["llm-emulator"]["cpu_seconds"] >= 0
    assert step["processes"]["tts-emulator"]["rss_mib_peak"] > 10
    assert step["client"]["cpu_cores"] < 0.5  # the load generator is nowhere near a bottleneck
    assert step["client"]["loop_lag_ms"]["count"] > 100
    assert len(step["load_average"]["after"]) == 3
    assert isinstance(step["meets_slo"], bool)
    # py-spy ran against the server (it needs ptrace rights; its error is recorded otherwise).
    assert set(step["profiles"]) == {"server"}
