"""The capacity model on a small synthetic cost profile (and one check on the shipped profile)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voice_operator.capacity import TARGET_UTILIZATION, NoMeasuredCost, Plan, make_plan, plan_for
from voice_operator.profiles import (
    CALIBRATED_ENTRIES,
    NODE_SIZES,
    CostProfile,
    StageCost,
    Workload,
    load_profile,
)
from voice_operator.spec import SpecError, parse_spec

CLOUD = [{"name": "cloud", "baseUrl": "https://llm.example/v1"}]  # a remote provider: the small client


def stage(
    unit: str,
    cpu: dict[int, float],
    mem: float,
    per_stream: float = 0.0,
    latency_ms: float = 100.0,
    **kw: object,
) -> StageCost:
    return StageCost(
        unit=unit,
        cpu_seconds_per_unit=cpu,
        latency_ms_per_batch={1: latency_ms},
        memory_mib_per_replica=mem,
        memory_mib_per_stream=per_stream,
        **kw,  # type: ignore[arg-type]
    )


def profile(asr_cpu: float = 0.07, asr_mem: float = 400.0) -> CostProfile:
    return CostProfile(
        stages={
            "gateway": stage("audio-second", {1: 0.0013}, 100, 0.7),
            "vad": stage("audio-second", {1: 0.004, 16: 0.0017}, 100),
            "asr": stage("audio-second", {1: asr_cpu, 4: asr_cpu * 0.75}, asr_mem, engines=["whisper"]),
            "llm": stage("request", {1: 0.017}, 60, latency_ms=2500.0, engines=["cloud"]),
            "llm:llamacpp": stage("request", {1: 5.0}, 1100, latency_ms=2500.0, engines=["llamacpp"]),
            "tts": stage("character", {1: 0.0007}, 80, engines=["edge"]),
        }
    )


def plan(devices: int, node_size: str = "4c8g", prof: CostProfile | None = None, **spec: Any) -> Plan:
    """A plan with a cloud LLM unless the stages say otherwise (the ASR-shaped cases)."""
    stages = {"llm": {"providers": CLOUD}, **spec.pop("stages", {})}
    return make_plan(
        parse_spec({"devices": devices, "nodeSize": node_size, "stages": stages, **spec}), prof or profile()
    )


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
        f"{target} devices need nodeSize: 4c16g; 4c8g x 1 fits {big.supported_devices}, memory-bound on asr"
    ), big.recommendation


def test_beyond_every_node_size_recommends_more_nodes() -> None:
    unbounded = {"asr": {"maxReplicas": 100}, "tts": {"maxReplicas": 100}}
    p = plan(2000, "4c32g", stages=unbounded)
    assert not p.fits and "nodes of 4c32g" in p.recommendation, p.recommendation
    more = plan(2000, "4c32g", maxNodes=20, stages=unbounded)
    assert more.fits and more.supported_devices >= 2000
    capped = plan(2000, "4c32g", maxNodes=20)
    assert f"stages.asr.maxReplicas: {capped.stages['asr'].needed_replicas}" in capped.recommendation


def test_more_devices_never_means_fewer_replicas() -> None:
    prof, workload = profile(), Workload()
    spec = parse_spec(
        {"devices": 1, "nodeSize": "4c32g", "maxNodes": 50, "stages": {"llm": {"providers": CLOUD}}}
    )
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
    p = make_plan(
        parse_spec(
            {
                "devices": 5,
                "nodeResources": {"cpu": "500m", "memory": "512Mi"},
                "stages": {"llm": {"providers": CLOUD}},
            }
        ),
        profile(),
    )
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
    sensevoice = shipped.stages["asr:sensevoice"]  # measured on architecture-only weights: said plainly
    assert (
        "ARCHITECTURE-ONLY, RANDOM WEIGHTS" in sensevoice.notes
        and "transcripts meaningless" in sensevoice.notes
    )
    assert sensevoice.engines == ["sensevoice"] and sensevoice.measured["command"].startswith(
        "voice-pipeline calibrate"
    )
    for llm in ([], CLOUD):  # every engine the defaults run has a measured cost
        p = make_plan(
            parse_spec({"devices": 60, "nodeSize": "4c16g", "stages": {"llm": {"providers": llm}}}), shipped
        )
        assert p.supported_devices > 0 and p.as_status()["stages"]["asr"]["replicas"] >= 1


# --- engines: the plan is made from the cost of the engine the Pods run ---------------------------


def test_the_chosen_asr_engine_cost_is_the_one_planned() -> None:
    prof = profile()
    prof.stages["asr:sensevoice"] = stage(
        "audio-second", {1: 0.02}, 2000, engines=["sensevoice"], notes="architecture-only"
    )
    whisper = plan(60, "4c16g", prof)
    sensevoice = plan(60, "4c16g", prof, stages={"asr": {"engine": "sensevoice"}})
    assert whisper.stages["asr"].engine == "whisper" and sensevoice.stages["asr"].engine == "sensevoice"
    assert sensevoice.stages["asr"].memory_mib >= 2000  # the measured footprint, not whisper's 400
    assert sensevoice.stages["asr"].cpu_request < whisper.stages["asr"].cpu_request


@pytest.mark.parametrize(
    ("stages", "named"),
    [
        ({"asr": {"engine": "sensevoice"}}, "asr:sensevoice"),
        ({"tts": {"engine": "piper"}}, "tts:piper"),
        ({"llm": {"providers": []}}, "llm:llamacpp"),
    ],
)
def test_an_engine_without_measured_cost_is_refused_saying_what_to_calibrate(
    stages: dict[str, Any], named: str
) -> None:
    prof = profile()
    del prof.stages["llm:llamacpp"]
    with pytest.raises(NoMeasuredCost) as err:
        plan(60, prof=prof, stages=stages)
    assert named in str(err.value) and f"voice-pipeline calibrate --only {named}" in str(err.value)


def test_an_engine_calibrate_cannot_measure_says_so_instead_of_a_command_that_fails() -> None:
    with pytest.raises(NoMeasuredCost, match="cannot measure it yet: add a measured `asr:openai` entry"):
        plan(60, stages={"asr": {"engine": "openai"}})


def test_calibrate_measures_every_entry_the_refusals_point_to() -> None:
    from voice_operator.calibrate import MEASURES

    assert tuple(MEASURES) == CALIBRATED_ENTRIES


def test_a_profile_from_before_engine_labels_still_covers_the_default_engines() -> None:
    old = profile()
    for cost in old.stages.values():
        cost.engines = []
    assert plan(60, prof=old).stages["asr"].engine == "whisper"


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ({"asr": {"engine": "paraformer"}}, "asr.engine: unknown engine 'paraformer'"),
        ({"tts": {"engine": "Edge"}}, "tts.engine: unknown engine 'Edge'"),
        ({"vad": {"engine": "webrtc"}}, "vad.engine: the vad stage has no engine choice"),
        ({"llm": {"engine": "gpt"}}, "follows from stages.llm.providers"),
    ],
)
def test_unknown_engines_are_an_invalid_spec(stages: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({"devices": 5, "stages": stages})


# --- the LLM stage's resources follow what it runs --------------------------------------------------


def test_a_local_llama_cpp_llm_gets_its_measured_memory_and_threads() -> None:
    prof = profile()
    local = plan(5, "4c16g", prof, stages={"llm": {"providers": []}}).stages["llm"]
    cloud = plan(5, "4c16g", prof).stages["llm"]
    assert local.engine == "llamacpp" and cloud.engine == "cloud"
    assert local.memory_mib >= prof.stages["llm:llamacpp"].memory_mib_per_replica  # plus headroom
    assert cloud.memory_mib < 200
    assert local.cpu_limit == 2.0 and cloud.cpu_limit == 0.5
    # 5 CPU-seconds per reply: CPU, not the client's few ms, decides how many replicas serve 40 devices.
    many = plan(40, "4c32g", prof, maxNodes=4, stages={"llm": {"providers": []}}).stages["llm"]
    demand = 40 * Workload().requests_per_device_second("llm") * 5.0
    assert many.replicas == -(-demand // (2.0 * TARGET_UTILIZATION))


def test_a_provider_without_base_url_is_the_local_server() -> None:
    spec = parse_spec({"devices": 5, "stages": {"llm": {"providers": [*CLOUD, {"name": "here"}]}}})
    assert spec.stages.engine("llm") == "llamacpp"


# --- LLM and TTS concurrency from arrivals x latency ---------------------------------------------


@pytest.mark.parametrize("devices", [1, 10, 60, 200])
def test_llm_and_tts_slots_follow_littles_law_with_headroom(devices: int) -> None:
    workload = Workload()
    p = plan(devices, "4c32g", maxNodes=4)
    for name, latency_s in (("llm", 2.5), ("tts", workload.sentence_playback_s)):
        s = p.stages[name]
        in_flight = devices * workload.requests_per_device_second(name) / s.replicas * latency_s
        assert s.max_concurrency >= max(4, 2 * in_flight) - 1e-9
        assert s.max_concurrency <= max(4, 2 * in_flight + 1)
        assert s.queue_size >= s.max_concurrency


def test_the_local_llm_has_the_servers_one_slot_and_queues_the_rest_in_the_stage() -> None:
    llm = plan(10, "4c32g", stages={"llm": {"providers": []}}).stages["llm"]
    in_flight = 10 * Workload().requests_per_device_second("llm") / llm.replicas * 2.5
    assert llm.max_concurrency == 1  # llama-cpp-python's server: one request at a time
    assert llm.queue_size >= max(16, 2 * in_flight)


def test_sixty_devices_get_the_llm_slots_a_two_and_a_half_second_turn_needs() -> None:
    llm = plan(60, "4c16g").stages["llm"]
    arrivals = 60 / Workload().turn_period_s  # one reply per turn
    assert arrivals * 2.5 > 9  # ~10 replies in flight: the 4 slots planned from CPU were not enough
    assert llm.max_concurrency * llm.replicas >= 2 * arrivals * 2.5


# --- supported devices agree with the fit check ------------------------------------------------------


def _fits(devices: int, node_size: str, max_nodes: int, prof: CostProfile, stages: dict[str, Any]) -> bool:
    spec = parse_spec({"devices": devices, "nodeSize": node_size, "maxNodes": max_nodes, "stages": stages})
    return plan_for(devices, spec, prof, Workload(), NODE_SIZES[node_size], max_nodes).fits


SHIPPED = load_profile()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    devices=st.integers(1, 10_000),
    node_size=st.sampled_from(list(NODE_SIZES)),
    max_nodes=st.integers(1, 12),
    llm=st.sampled_from(["local", "cloud"]),
    batched=st.booleans(),
)
def test_supported_devices_is_exactly_where_fitting_stops(
    devices: int, node_size: str, max_nodes: int, llm: str, batched: bool
) -> None:
    prof = SHIPPED if batched else profile()
    stages: dict[str, Any] = {"llm": {"providers": CLOUD if llm == "cloud" else []}}
    if llm == "local" and "llm:llamacpp" not in prof.stages:
        prof = profile()
    p = make_plan(
        parse_spec({"devices": devices, "nodeSize": node_size, "maxNodes": max_nodes, "stages": stages}), prof
    )
    supported = p.supported_devices
    assert p.fits == (devices <= supported), (devices, supported)
    if supported < 20_000:
        assert not _fits(supported + 1, node_size, max_nodes, prof, stages)
    # Every count up to the supported one fits (all of them when few; else every 7th and the ends).
    counts = range(1, supported + 1) if supported <= 400 else [*range(1, supported + 1, 7), supported]
    assert all(_fits(d, node_size, max_nodes, prof, stages) for d in counts)


def test_the_reported_case_230_on_two_4c8g_nodes_agrees_with_itself() -> None:
    p = make_plan(
        parse_spec(
            {"devices": 230, "nodeSize": "4c8g", "maxNodes": 2, "stages": {"llm": {"providers": CLOUD}}}
        ),
        SHIPPED,
    )
    assert p.fits == (p.supported_devices >= 230)
    assert all(
        _fits(d, "4c8g", 2, SHIPPED, {"llm": {"providers": CLOUD}}) for d in range(1, p.supported_devices + 1)
    )


def test_plans_never_shrink_as_devices_grow() -> None:
    spec = parse_spec(
        {"devices": 1, "nodeSize": "4c32g", "maxNodes": 50, "stages": {"llm": {"providers": CLOUD}}}
    )
    previous = None
    for devices in range(1, 1500):
        current = plan_for(devices, spec, SHIPPED, Workload(), NODE_SIZES["4c32g"], 50)
        if previous is not None:
            assert (
                current.cpu_used >= previous.cpu_used - 1e-9
                and current.memory_used >= previous.memory_used - 1e-9
            )
            for name, s in current.stages.items():
                assert s.replicas >= previous.stages[name].replicas, (devices, name)
        previous = current


# --- advice stays inside the schema, and following it makes the target fit -----------------------------

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[2] / "crds" / "voicepipeline.yaml").read_text())
SPEC_SCHEMA = SCHEMA["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def _bounds(prop: dict[str, Any]) -> tuple[int, int]:
    return int(prop["minimum"]), int(prop["maximum"])


def _follow(spec: dict[str, Any], advice: str) -> dict[str, Any]:
    spec = {**spec, "stages": {k: dict(v) for k, v in spec.get("stages", {}).items()}}
    for stage_name, n in re.findall(r"stages\.(\w+)\.maxReplicas: (\d+)", advice):
        spec["stages"].setdefault(stage_name, {})["maxReplicas"] = int(n)
    if m := re.search(r"nodeSize: (\w+)", advice):
        spec["nodeSize"] = m.group(1)
    if m := re.search(r"maxNodes: (\d+)", advice):
        spec["maxNodes"] = int(m.group(1))
    return spec


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    devices=st.sampled_from([*_bounds(SPEC_SCHEMA["devices"]), 60, 230, 999, 5000]) | st.integers(1, 10_000),
    node_size=st.sampled_from(SPEC_SCHEMA["nodeSize"]["enum"]),
    max_nodes=st.sampled_from(_bounds(SPEC_SCHEMA["maxNodes"])) | st.integers(1, 100),
    max_replicas=st.sampled_from(
        _bounds(SPEC_SCHEMA["stages"]["properties"]["asr"]["properties"]["maxReplicas"])
    )
    | st.integers(1, 100),
    llm=st.sampled_from(["local", "cloud"]),
)
def test_advice_never_suggests_what_the_schema_refuses(
    devices: int, node_size: str, max_nodes: int, max_replicas: int, llm: str
) -> None:
    stage_props = SPEC_SCHEMA["stages"]["properties"]["asr"]["properties"]
    spec = {
        "devices": devices,
        "nodeSize": node_size,
        "maxNodes": max_nodes,
        "stages": {
            "asr": {"maxReplicas": max_replicas},
            "llm": {"providers": CLOUD if llm == "cloud" else []},
        },
    }
    p = make_plan(parse_spec(spec), profile())
    advice = p.recommendation
    for n in re.findall(r"maxReplicas: (\d+)", advice):
        assert _bounds(stage_props["maxReplicas"])[0] <= int(n) <= _bounds(stage_props["maxReplicas"])[1], (
            advice
        )
    for n in re.findall(r"maxNodes: (\d+)", advice):
        assert _bounds(SPEC_SCHEMA["maxNodes"])[0] <= int(n) <= _bounds(SPEC_SCHEMA["maxNodes"])[1], advice
    for size in re.findall(r"nodeSize: (\w+)", advice):
        assert size in SPEC_SCHEMA["nodeSize"]["enum"], advice
    if not p.fits and (
        "need " in advice and "do not fit" not in advice and "more than one pipeline" not in advice
    ):
        assert make_plan(parse_spec(_follow(spec, advice)), profile()).fits, advice  # the advice works


def test_ten_thousand_devices_get_advice_the_schema_accepts() -> None:
    p = plan(10_000, "4c32g", maxNodes=100)
    assert not p.fits and "raise" not in p.recommendation
    assert "split the devices across pipelines" in p.recommendation, p.recommendation
