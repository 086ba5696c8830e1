"""The autoscaler's decisions, table-driven, with an injected clock (no Prometheus, no cluster)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest

from voice_operator.autoscaler import Config, Decision, NodeBudget, StageState, decide
from voice_operator.profiles import NODE_SIZES
from voice_operator.prometheus import Snapshot, StageSignals

CONFIG = Config(slo_s=2.0, stabilization_s=300, scale_up_cooldown_s=90)
BUDGET = NodeBudget(NODE_SIZES["4c8g"], 1)  # 3.6 CPU, 6.5 GiB after the reserve
STEP = 30.0  # seconds between samples


def state(
    replicas: int = 2, cpu: float = 1.0, batch: int = 1, sizes: tuple[int, ...] = (1,), **kw: object
) -> StageState:
    return StageState(
        replicas=replicas, batch_size=batch, cpu_limit=cpu, cpu_request=cpu * 0.5, memory_mib=300,
        min_replicas=1, max_replicas=6, plan_batch_size=batch, batch_sizes=sizes, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def current(**overrides: StageState) -> dict[str, StageState]:
    base = {
        "gateway": state(1),
        "vad": state(1),
        "asr": state(2, cpu=1.0, batch=1, sizes=(1, 2, 4, 8)),
        "llm": state(1, cpu=0.5),
        "tts": state(1),
    }
    return {**base, **overrides}


def quiet(stage: str, replicas: int = 1, cpu: float = 1.0) -> StageSignals:
    """50% CPU, short queues: no reason to act either way."""
    return StageSignals(busy_rate=0.5 * replicas * cpu, request_rate=2.0, queue_wait_p95_s=0.02,
                        latency_p95_s=0.05, inflight=1, max_concurrency=16, mean_batch=1)  # fmt: skip


def steady(states: Mapping[str, StageState]) -> dict[str, StageSignals]:
    return {s: quiet(s, st.replicas, st.cpu_limit) for s, st in states.items()}


def snap(t: float, stages: dict[str, StageSignals], state_: str = "ok") -> Snapshot:
    return Snapshot(t, state_, "", stages, active_devices=20)  # type: ignore[arg-type]


def run(
    samples: list[dict[str, StageSignals]], states: dict[str, StageState], budget: NodeBudget = BUDGET
) -> tuple[list[Decision], dict[str, StageState]]:
    """Feed samples one tick at a time, carrying the targets forward like the controller does."""
    window: list[Snapshot] = []
    decisions = []
    for i, stages in enumerate(samples):
        now = 1000.0 + i * STEP
        window.append(snap(now, stages))
        window = [s for s in window if s.time >= now - CONFIG.stabilization_s - 3 * STEP]
        d = decide(window, states, budget, CONFIG, now)
        decisions.append(d)
        states = d.targets
    return decisions, states


def actions(decisions: list[Decision]) -> list[str]:
    return [f"{a.stage}:{a.kind}:{a.old}->{a.new}" for d in decisions for a in d.actions]


def test_steady_load_no_action() -> None:
    states = current()
    decisions, after = run([steady(states)] * 20, states)
    assert actions(decisions) == []
    assert after == states
    assert all(d.capacity_sufficient for d in decisions)


@pytest.mark.parametrize("stage", ["gateway", "vad", "asr", "llm", "tts"])
def test_step_up_on_each_stage_scales_it_at_once(stage: str) -> None:
    states = current()
    hot = dict(steady(states))
    st = states[stage]
    hot[stage] = replace(hot[stage], busy_rate=0.98 * st.replicas * st.cpu_limit)  # 98% CPU
    decisions, after = run([steady(states), hot], states)
    assert actions(decisions[:1]) == []
    (action,) = decisions[1].actions
    assert action.stage == stage and action.kind == "scale_up"
    want = -(-0.98 * st.replicas // 0.7)  # ceil(busy / (cpu x 0.7))
    assert action.new == want and after[stage].replicas == want
    assert "CPU 98%" in action.reason and decisions[1].bottleneck == stage
    assert action.message().startswith(f"{stage} {st.replicas} -> {int(want)} replicas: CPU 98% of")


def test_queue_wait_raises_batch_size_before_replicas() -> None:
    states = current()
    queued = dict(steady(states))
    queued["asr"] = replace(queued["asr"], queue_wait_p95_s=0.18, busy_rate=0.8)  # CPU 40%: not compute
    decisions, after = run([queued] * 8, states)
    steps = actions(decisions)
    # batch 1 -> 2 -> 4 -> 8 one per cool-down (90 s = 3 ticks), then a replica.
    assert steps[:3] == ["asr:batch_up:1->2", "asr:batch_up:2->4", "asr:batch_up:4->8"]
    assert decisions[0].actions[0].message() == (
        "asr 1 -> 2 batch size: queue wait p95 180 ms > 100 ms budget with CPU at 40%"
    )
    assert [i for i, d in enumerate(decisions) if d.actions] == [0, 3, 6]
    queued_more = run([queued] * 12, states)[0]
    assert "asr:scale_up:2->3" in actions(queued_more)
    assert after["asr"].batch_size == 8


def test_queue_wait_on_a_non_batching_stage_adds_a_replica_with_the_reason() -> None:
    states = current()
    queued = dict(steady(states))
    queued["llm"] = replace(queued["llm"], queue_wait_p95_s=0.18, busy_rate=0.1)
    decisions, _ = run([queued], states)
    assert [a.message() for a in decisions[0].actions] == [
        "llm 1 -> 2 replicas: queue wait p95 180 ms > 100 ms budget"
    ]


def test_step_down_waits_for_the_stabilization_window() -> None:
    states = current(asr=state(4, cpu=1.0, sizes=(1, 2, 4, 8)))
    low = dict(steady(states))
    low["asr"] = replace(low["asr"], busy_rate=0.6)  # fits 1 replica at 70%
    decisions, after = run([low] * 14, states)
    first = next(i for i, d in enumerate(decisions) if d.actions)
    # The window must reach back 300 s (10 ticks of 30 s) before anything is removed.
    assert first * STEP >= CONFIG.stabilization_s
    assert actions(decisions) == ["asr:scale_down:4->1"]
    assert "peak CPU 600m over 300 s fits 1 replica(s)" in decisions[first].actions[0].reason
    assert after["asr"].replicas == 1


def test_a_spike_inside_the_window_holds_the_scale_down() -> None:
    states = current(asr=state(4, cpu=1.0, sizes=(1, 2, 4, 8)))
    low = dict(steady(states))
    low["asr"] = replace(low["asr"], busy_rate=0.6)
    spike = dict(low)
    spike["asr"] = replace(low["asr"], busy_rate=2.5)  # 62%: no scale-up, but it needs 4 replicas
    samples = [low] * 5 + [spike] + [low] * 8
    decisions, after = run(samples, states)
    assert actions(decisions) == []  # the spike is inside every full window so far
    assert after["asr"].replicas == 4


def test_flapping_input_does_not_oscillate() -> None:
    states = current()
    calm = steady(states)
    hot = dict(calm)
    hot["asr"] = replace(calm["asr"], busy_rate=1.9)  # 95% of 2 CPU
    decisions, after = run([hot, calm] * 15, states)
    steps = actions(decisions)
    assert steps == ["asr:scale_up:2->3"], steps  # up once, never back down while it flaps
    assert after["asr"].replicas == 3


def test_missing_series_leaves_that_stage_alone() -> None:
    states = current()
    samples = steady(states)
    samples["asr"] = StageSignals()  # no series at all
    samples["llm"] = replace(samples["llm"], busy_rate=0.49)  # 98% of 0.5 CPU
    decisions, _ = run([samples], states)
    assert actions(decisions) == ["llm:scale_up:1->2"]
    assert "asr: no series, left alone" in decisions[0].notes
    assert "asr" not in decisions[0].saturation


def test_prometheus_down_means_no_action_and_no_verdict() -> None:
    states = current(asr=state(4, cpu=1.0))
    down = Snapshot(1000.0, "down", "unreachable: ConnectError")
    d = decide([down], states, BUDGET, CONFIG, 1000.0)
    assert d.actions == [] and d.capacity_sufficient is None and d.targets == states
    assert "unreachable" in d.notes[0]
    # Down in the middle of a stabilization window: that window does not count as calm.
    low = dict(steady(states))
    low["asr"] = replace(low["asr"], busy_rate=0.6)
    window = [snap(1000.0 + i * STEP, low) for i in range(12)]
    window[5] = Snapshot(window[5].time, "down", "timeout")
    assert decide(window, states, BUDGET, CONFIG, window[-1].time).actions == []


def test_budget_exhausted_moves_slack_to_the_bottleneck() -> None:
    # Requests: asr 2 x 0.5 + tts 3 x 0.5 + gateway, vad, llm 0.25 each = 3.25 of 3.6 CPU;
    # one more asr replica (0.5) does not fit until tts gives one back.
    states = current(
        asr=state(2, cpu=1.0, sizes=(1,)),
        tts=state(3, cpu=1.0),
        gateway=state(1, cpu=0.5),
        vad=state(1, cpu=0.5),
        llm=state(1, cpu=0.5),
    )
    calm = steady(states)
    calm["tts"] = replace(calm["tts"], busy_rate=0.3)  # 3 replicas doing the work of one
    hot = dict(calm)
    hot["asr"] = replace(calm["asr"], busy_rate=1.9)
    decisions, after = run([calm, hot], states)
    assert actions(decisions) == ["tts:rebalance:3->2", "asr:scale_up:2->3"], actions(decisions)
    assert "slack moved to asr" in decisions[1].actions[0].reason
    assert decisions[1].capacity_sufficient is True
    assert after["tts"].replicas == 2 and after["asr"].replicas == 3


def test_budget_exhausted_without_slack_says_capacity_insufficient() -> None:
    # Requests: asr 2 x 0.5, tts, gateway, vad 0.5 each, llm 0.25 = 2.75 of 3.6 CPU.
    states = current(asr=state(2, cpu=1.0, sizes=(1,)), tts=state(1, cpu=1.0))
    # Every other stage is busy (no slack to move) and asr needs 6 replicas.
    busy = {s: replace(quiet(s, st.replicas, st.cpu_limit), busy_rate=0.8 * st.replicas * st.cpu_limit)
            for s, st in states.items()}  # fmt: skip
    busy["asr"] = replace(busy["asr"], busy_rate=3.9)
    decisions, after = run([busy], states)
    d = decisions[0]
    assert d.capacity_sufficient is False
    assert d.recommendation.startswith("asr wants 6 replicas (has 3)"), d.recommendation
    assert d.recommendation.endswith("use maxNodes: 2 of 4c8g"), d.recommendation
    # It still takes what the budget allows, and says so.
    (step,) = d.actions
    assert step.message() == "asr 2 -> 3 replicas: CPU 195% of 2 allotted > 85% (budget allows 3 of 6)"
    assert after["asr"].replicas == 3


def test_memory_bound_insufficiency_recommends_the_next_node_size() -> None:
    heavy = replace(state(2, cpu=0.5, sizes=(1,)), memory_mib=2500)  # a SenseVoice-sized ASR
    states = current(asr=heavy)
    hot = steady(states)
    hot["asr"] = replace(hot["asr"], busy_rate=0.95)
    d = run([hot], states)[0][0]
    assert d.capacity_sufficient is False
    assert "use nodeSize 4c16g (x 1)" in d.recommendation, d.recommendation


@pytest.mark.parametrize(
    ("replicas", "busy", "expected"),
    [
        (2, 20.0, 6),  # wants 29: maxReplicas 6
        (6, 20.0, 6),  # already at the bound: no action
        (2, 0.0, 1),  # idle: down to minReplicas 1, never 0
    ],
)
def test_bounds_are_respected(replicas: int, busy: float, expected: int) -> None:
    big = NodeBudget(NODE_SIZES["4c32g"], 10)
    states = current(asr=state(replicas, cpu=1.0))
    samples = steady(states)
    samples["asr"] = replace(samples["asr"], busy_rate=busy, queue_wait_p95_s=None, latency_p95_s=None)
    _, after = run([samples] * 14, states, big)
    assert after["asr"].replicas == expected


def test_min_replicas_floor_with_min_two() -> None:
    states = current(asr=replace(state(4, cpu=1.0), min_replicas=2))
    samples = steady(states)
    samples["asr"] = replace(samples["asr"], busy_rate=0.0)
    _, after = run([samples] * 14, states)
    assert after["asr"].replicas == 2


def test_latency_over_its_share_alone_neither_adds_nor_holds_a_replica() -> None:
    """A replica too small for one request's compute (the closed-loop test's 200m ASR: 1.5 s per
    utterance against a 0.6 s share) is slow at any load: nothing queues, so no replica more,
    and when its CPU is slack it scales in; it still names the bottleneck."""
    states = current(asr=state(3, cpu=0.2, sizes=(1,)))
    slow = {**steady(states), "asr": StageSignals(busy_rate=0.05, request_rate=0.2, queue_wait_p95_s=0.01,
                                                  latency_p95_s=1.5, inflight=0.3, max_concurrency=4)}  # fmt: skip
    decisions, after = run([slow] * 12, states)
    assert decisions[0].bottleneck == "asr" and decisions[0].saturation["asr"] > 1
    assert actions(decisions) == ["asr:scale_down:3->1"]
    queued = {**slow, "asr": replace(slow["asr"], queue_wait_p95_s=0.5)}  # now it waits: one more
    decisions, _ = run([queued], after)
    assert actions(decisions) == ["asr:scale_up:1->2"]
