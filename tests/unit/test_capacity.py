"""The capacity model on a small synthetic cost profile (and one check on the shipped profile)."""

from __future__ import annotations

import pytest

from voice_operator.capacity import TARGET_UTILIZATION, make_plan, plan_for
from voice_operator.profiles import NODE_SIZES, CostProfile, StageCost, Workload, load_profile
from voice_operator.spec import SpecError, parse_spec


def profile(asr_cpu: float = 0.07, asr_mem: float = 400.0) -> CostProfile:
    def stage(unit: str, cpu: dict[int, float], mem: float, per_stream: float = 0.0) -> StageCost:
        return StageCost(
            unit=unit,
            cpu_seconds_per_unit=cpu,
            latency_ms_per_batch={1: 100.0},
            memory_mib_per_replica=mem,
            memory_mib_per_stream=per_stream,
        )

    return CostProfile(
        stages={
            "gateway": stage("audio-second", {1: 0.0013}, 100, 0.7),
            "vad": stage("audio-second", {1: 0.004, 16: 0.0017}, 100),
            "asr": stage("audio-second", {1: asr_cpu, 4: asr_cpu * 0.75}, asr_mem),
            "llm": stage("request", {1: 0.017}, 60),
            "tts": stage("character", {1: 0.0007}, 80),
        }
    )


def plan(devices: int, node_size: str = "4c8g", prof: CostProfile | None = None, **spec: object):  # type: ignore[no-untyped-def]
    return make_plan(parse_spec({"devices": devices, "nodeSize": node_size, **spec}), prof or profile())


@pytest.mark.parametrize("node_size", ["4c8g", "4c16g", "4c32g"])
def test_small_target_fits_every_node_size(node_size: str) -> None:
    p = plan(10, node_size)
    assert p.fits and p.supported_devices >= 10
    assert all(s.replicas >= 1 for s in p.stages.values())
    assert p.cpu_used <= p.budget.cpu and p.memory_used <= p.budget.memory_mib


def test_cpu_bound_on_asr_and_memory_does_not_buy_devices() -> None:
    plans = {size: plan(60, size) for size in NODE_SIZES}
    assert {p.bottleneck for p in plans.values()} == {"asr"}
    assert {p.binding for p in plans.values()} == {"cpu"}
    assert len({p.supported_devices for p in plans.values()}) == 1  # same 4 cores: same answer


HEAVY = profile(asr_cpu=0.07, asr_mem=3000.0)  # a big ASR model (SenseVoiceSmall-like footprint)


def test_memory_bound_asr_model_makes_bigger_nodes_worth_it() -> None:
    small, medium, large = (plan(60, size, HEAVY) for size in ("4c8g", "4c16g", "4c32g"))
    assert small.binding == "memory" and small.bottleneck == "asr"
    assert small.supported_devices < medium.supported_devices  # 16 GB buys ASR replicas...
    assert (
        medium.binding == "cpu" and large.supported_devices == medium.supported_devices
    )  # ...until CPU binds


def test_target_too_large_gets_a_recommendation_naming_the_node_size() -> None:
    target = plan(1, "4c16g", HEAVY).supported_devices
    big = plan(target, "4c8g", HEAVY)
    assert not big.fits
    assert big.recommendation.startswith(
        f"{target} devices need 4c16g; 4c8g fits {big.supported_devices}, memory-bound on asr"
    ), big.recommendation


def test_beyond_every_node_size_recommends_more_nodes() -> None:
    unbounded = {"asr": {"maxReplicas": 100}, "tts": {"maxReplicas": 100}}
    p = plan(2000, "4c32g", stages=unbounded)
    assert not p.fits and "nodes of 4c32g" in p.recommendation, p.recommendation
    more = plan(2000, "4c32g", maxNodes=20, stages=unbounded)
    assert more.fits and more.supported_devices >= 2000
    capped = plan(2000, "4c32g", maxNodes=20)
    assert "stages.asr.maxReplicas=20" in capped.recommendation


def test_more_devices_never_means_fewer_replicas() -> None:
    prof, workload = profile(), Workload()
    spec = parse_spec({"devices": 1, "nodeSize": "4c32g", "maxNodes": 50})
    previous = None
    for devices in range(1, 400, 7):
        current = plan_for(devices, spec, prof, workload, NODE_SIZES["4c32g"], 50)
        if previous is not None:
            for stage, s in current.stages.items():
                assert s.replicas >= previous.stages[stage].replicas, (devices, stage)
        previous = current


def test_replicas_keep_utilization_under_target_and_bounds_are_respected() -> None:
    p = plan(100, "4c32g", maxNodes=4)
    for s in p.stages.values():
        assert s.utilization <= TARGET_UTILIZATION + 1e-9
    capped = plan(500, "4c32g", maxNodes=10, stages={"asr": {"maxReplicas": 2}})
    assert capped.stages["asr"].replicas == 2 and capped.bottleneck == "asr" and capped.binding == "replicas"
    floor = plan(1, "4c8g", stages={"tts": {"minReplicas": 3}})
    assert floor.stages["tts"].replicas == 3


def test_impossible_plan_says_what_one_replica_of_each_needs() -> None:
    p = make_plan(parse_spec({"devices": 5, "nodeResources": {"cpu": "500m", "memory": "512Mi"}}), profile())
    assert p.supported_devices == 0 and not p.fits
    assert "even one replica of each stage needs" in p.problems[0]


def test_spec_errors_are_clear() -> None:
    with pytest.raises(SpecError, match="minReplicas 5 > maxReplicas 2"):
        parse_spec({"devices": 5, "stages": {"asr": {"minReplicas": 5, "maxReplicas": 2}}})
    with pytest.raises(SpecError, match="devices"):
        parse_spec({"devices": 0})
    with pytest.raises(SpecError, match="not a CPU quantity"):
        make_plan(parse_spec({"devices": 5, "nodeResources": {"cpu": "lots", "memory": "1Gi"}}), profile())


def test_shipped_profile_is_measured_and_plannable() -> None:
    shipped = load_profile()
    assert shipped.measured["command"] == "voice-pipeline calibrate"
    assert shipped.measured["machine"]["cores"] >= 1 and shipped.measured["date"]
    assert set(shipped.stages) >= {"gateway", "vad", "asr", "llm", "tts"}
    p = make_plan(parse_spec({"devices": 60, "nodeSize": "4c16g"}), shipped)
    assert p.supported_devices > 0 and p.as_status()["stages"]["asr"]["replicas"] >= 1
