"""The capacity model: spec + node + measured costs + workload -> a plan. PURE.

For each stage, the work the target devices bring (workload.units_per_device_second x devices)
times the measured CPU cost per unit of the stage's engine, at the batch size that load actually
forms, gives the cores the stage needs; replicas of a fixed CPU shape are added until each runs at
or below TARGET_UTILIZATION (headroom keeps queueing delay, and so latency, low). Memory is the
measured footprint per replica (model, or for a local LLM its llama.cpp server) plus a per-stream
part. LLM and TTS requests mostly wait on a provider, so their concurrency per replica comes from
Little's law (arrivals x how long one request lasts, with headroom), not from CPU.

Plans are monotonic in devices: bigger loads form bigger batches, which cost less per unit, so the
raw arithmetic can need fewer replicas for more devices. A plan for d devices therefore never has
less (replicas, CPU, memory per replica) than the plan for any smaller count; so "fits" is
monotonic and the supported-device count is exactly where fitting stops (every smaller target fits,
the next one does not). The plans for 1..d are computed once per spec shape and cost profile.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal, Protocol

from voice_operator.profiles import (
    CALIBRATED_ENTRIES,
    NODE_SIZES,
    CostProfile,
    NodeProfile,
    Reserve,
    StageCost,
    Workload,
)
from voice_operator.quantity import format_cpu, format_memory, parse_cpu, parse_memory_mib
from voice_operator.spec import PipelineSpec, Stages
from voice_pipeline import contract as c
from voice_pipeline.contract import STAGES

TARGET_UTILIZATION = 0.7
MEMORY_HEADROOM = 1.25
# Memory limits are rounded up to this step: a Pod whose limit changes is replaced, and a few more
# devices must not restart the gateway that holds every device's connection (nor roll the others).
MEMORY_STEP_MIB = 64
MIN_CPU_REQUEST = 0.05
# Per-replica CPU limits: ASR decodes 2 batches at once, a thread each; the others are single-threaded hot paths
# (the LLM stage as a cloud client); a local LLM is its llama.cpp server's threads
# (LlmSettings.local_threads, set from this limit).
REPLICA_CPU = {"gateway": 1.0, "vad": 1.0, "asr": 2.0, "llm": 0.5, "tts": 1.0}
LOCAL_LLM_CPU = 2.0
LOCAL_LLM_SLOTS = 1
MAX_WAIT_MS = {"gateway": 0, "vad": 2, "asr": 20, "llm": 0, "tts": 0}
STREAMING_STAGES = ("gateway", "vad")  # hold per-session state for every connected device
BATCHING_STAGES = ("vad", "asr")
# LLM/TTS slots per replica: twice the requests Little's law says are in flight on average (Poisson
# arrivals burst), never fewer than 4; as many more may wait before the stage refuses (overloaded).
CONCURRENCY_HEADROOM = 2.0
MIN_CONCURRENCY = 4
MIN_QUEUE = 16
# The schema's bounds (crds/voicepipeline.yaml): advice never suggests beyond them.
SCHEMA_MAX_DEVICES = 10_000
SCHEMA_MAX_NODES = 100
SCHEMA_MAX_REPLICAS = 100
# Supported devices are searched up to here (twice the most a spec may ask for).
MAX_DEVICES = 2 * SCHEMA_MAX_DEVICES

Resource = Literal["cpu", "memory", "replicas"]


class NoMeasuredCost(ValueError):
    """The spec chose an engine the cost profile has no measured cost for: no plan is better than a
    plan made from another engine's cost."""

    def __init__(self, stage: str, engine: str) -> None:
        self.stage, self.engine = stage, engine
        what = (
            "stages.llm.providers is empty (or has one without baseUrl), so the llm stage runs a local "
            "llama.cpp server"
            if stage == "llm" and engine == c.LLM_LOCAL_ENGINE
            else f"stages.{stage}.engine is {engine!r}"
        )
        key = f"{stage}:{engine}"
        how = (
            f"measure it where that engine runs with `voice-pipeline calibrate --only {key} --output "
            "cost-profile.json`"
            if key in CALIBRATED_ENTRIES
            else f"`voice-pipeline calibrate` cannot measure it yet: add a measured `{key}` entry to a cost profile"
        )
        super().__init__(
            f"{what}, and the cost profile has no measured cost for {key}; {how} and plan with that profile "
            "(--profile, or the chart's operator.costProfile)"
        )


@dataclass(frozen=True)
class StagePlan:
    replicas: int
    cpu_limit: float
    cpu_request: float
    memory_mib: float
    batch_size: int
    max_wait_ms: int
    max_concurrency: int
    devices: int  # devices these replicas serve at the target utilization
    utilization: float
    capped: bool  # maxReplicas stopped it short of the load
    engine: str = ""
    queue_size: int = MIN_QUEUE
    needed_replicas: int = 0  # what the load needs, before maxReplicas

    def as_status(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "engine": self.engine,
            "cpu": format_cpu(self.cpu_limit),
            "cpuRequest": format_cpu(self.cpu_request),
            "memory": format_memory(self.memory_mib),
            "batchSize": self.batch_size,
            "maxWaitMs": self.max_wait_ms,
            "maxConcurrency": self.max_concurrency,
            "queueSize": self.queue_size,
            "devices": self.devices,
            "utilization": round(self.utilization, 3),
        }


@dataclass(frozen=True)
class Budget:
    cpu: float
    memory_mib: float

    def holds(self, usage: Usage) -> bool:
        return usage.cpu <= self.cpu + 1e-9 and usage.memory_mib <= self.memory_mib + 1e-9


class Placed(Protocol):
    """A stage as the budget sees it: replicas of one size (a StagePlan, an autoscaler StageState)."""

    @property
    def replicas(self) -> int: ...
    @property
    def cpu_request(self) -> float: ...
    @property
    def memory_mib(self) -> float: ...


@dataclass(frozen=True)
class Usage:
    """What replicas request from the node budget: the one sum the plan and the autoscaler share."""

    cpu: float
    memory_mib: float

    @classmethod
    def of(cls, stages: Iterable[Placed]) -> Usage:
        placed = list(stages)
        return cls(
            sum(s.cpu_request * s.replicas for s in placed), sum(s.memory_mib * s.replicas for s in placed)
        )

    def __str__(self) -> str:
        return f"{format_cpu(self.cpu)} CPU and {format_memory(self.memory_mib)}"


def nodes_for(usage: Usage, node: NodeProfile) -> int:
    """Nodes of this size whose budget holds `usage` (SCHEMA_MAX_NODES + 1: none can)."""
    per_node = budget_for(node, 1)
    if per_node.cpu <= 0 or per_node.memory_mib <= 0:
        return SCHEMA_MAX_NODES + 1
    return max(
        1,
        math.ceil(usage.cpu / per_node.cpu - 1e-9),
        math.ceil(usage.memory_mib / per_node.memory_mib - 1e-9),
    )


def smallest_node_size(usage: Usage, nodes: int) -> str:
    """The smallest named node size whose `nodes` nodes hold `usage`; "" when none does."""
    return next((name for name, size in NODE_SIZES.items() if nodes_for(usage, size) <= nodes), "")


@dataclass
class Plan:
    target_devices: int
    node: NodeProfile
    nodes: int
    stages: dict[str, StagePlan]
    budget: Budget
    supported_devices: int = 0
    bottleneck: str = ""
    binding: Resource | Literal[""] = ""
    recommendation: str = ""
    smallest_node_size: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def usage(self) -> Usage:
        return Usage.of(self.stages.values())

    @property
    def cpu_used(self) -> float:
        return self.usage.cpu

    @property
    def memory_used(self) -> float:
        return self.usage.memory_mib

    @property
    def fits(self) -> bool:
        return not any(s.capped for s in self.stages.values()) and self.budget.holds(self.usage)

    def as_status(self) -> dict[str, Any]:
        return {
            "targetDevices": self.target_devices,
            "supportedDevices": self.supported_devices,
            "fits": self.fits,
            "bottleneck": self.bottleneck,
            "bindingResource": self.binding,
            "nodeSize": self.node.name,
            "nodes": self.nodes,
            "smallestNodeSize": self.smallest_node_size,
            "budget": {"cpu": format_cpu(self.budget.cpu), "memory": format_memory(self.budget.memory_mib)},
            "used": {"cpu": format_cpu(self.cpu_used), "memory": format_memory(self.memory_used)},
            "stages": {name: s.as_status() for name, s in self.stages.items()},
            "recommendation": self.recommendation,
        }


def budget_for(node: NodeProfile, nodes: int, reserve: Reserve | None = None) -> Budget:
    reserve = reserve or Reserve()
    return Budget(
        cpu=max(0.0, (node.cpu - reserve.cpu) * nodes),
        memory_mib=max(0.0, (node.memory_mib - reserve.memory_mib) * nodes),
    )


# Profiles calibrated before entries named their engines: the plain `<stage>` entry measured this.
_LEGACY_DEFAULT_ENGINE = {"asr": "whisper", "tts": "edge", "llm": c.LLM_CLOUD_ENGINE}


def stage_cost(stage: str, spec: PipelineSpec, profile: CostProfile) -> StageCost:
    """The measured cost of the engine the stage runs; NoMeasuredCost when the profile has none."""
    engine = spec.stages.engine(stage)
    if not engine:
        return profile.stages[stage]
    exact = profile.stages.get(f"{stage}:{engine}")
    if exact is not None:
        return exact
    for key, cost in profile.stages.items():
        if (key == stage or key.startswith(f"{stage}:")) and engine in cost.engines:
            return cost
    plain = profile.stages.get(stage)
    if plain is not None and not plain.engines and _LEGACY_DEFAULT_ENGINE.get(stage) == engine:
        return plain
    raise NoMeasuredCost(stage, engine)


@dataclass(frozen=True)
class _StageModel:
    """One stage of one spec, resolved: everything its plan at any device count depends on."""

    stage: str
    engine: str
    cost: StageCost
    cpu_limit: float
    min_replicas: int
    max_replicas: int
    batch_override: int | None
    memory_override: float | None
    units_per_device: float  # cost units per device-second
    requests_per_device: float  # requests per device-second
    request_s: float  # how long one request is in flight (Little's law)

    def batch(self, arrivals_per_replica: float) -> int:
        """Requests waiting together at one replica (Little's law on the batch latency), rounded down
        to a measured batch size: the cost model never assumes a batch the load does not form. Of
        those, the cheapest per unit: padding to the longest utterance can make a bigger batch cost
        more (measured for SenseVoiceSmall: batch 4 dearer than 2), and the planned size caps it."""
        if self.batch_override:
            return self.batch_override
        if self.stage not in BATCHING_STAGES:
            return self.cost.batch_sizes[0]
        latency_s = self.cost.latency_ms_per_batch.get(1, 50.0) / 1000
        concurrent = max(1.0, arrivals_per_replica * latency_s)
        fitting = [b for b in self.cost.batch_sizes if b <= concurrent] or self.cost.batch_sizes[:1]
        return min(reversed(fitting), key=lambda b: self.cost.cpu_seconds_per_unit[b])

    def raw(self, devices: int) -> tuple[int, float, int]:
        """(replicas, cores of demand, batch size) for this many devices, before the envelope.

        A replica count R with R >= need(R), growing from the floor: when bigger batches cost less
        per unit, need grows with R (fewer arrivals per replica form smaller batches) and this is the
        least such R. It always ends: R only grows, and need is bounded by the costliest batch.
        """
        units = devices * self.units_per_device
        arrivals = devices * self.requests_per_device
        floor = max(self.min_replicas, 1)
        replicas = floor
        while True:
            batch = self.batch(arrivals / replicas)
            demand = units * self.cost.cpu_at(batch)
            needed = max(floor, math.ceil(demand / (self.cpu_limit * TARGET_UTILIZATION) - 1e-9))
            if needed <= replicas:
                return replicas, demand, batch
            replicas = needed

    def memory_per_replica(self, devices: int, replicas: int, batch: int, concurrency: int) -> float:
        if self.memory_override is not None:
            return self.memory_override
        if self.stage in STREAMING_STAGES:
            streams = math.ceil(devices / replicas)
        elif self.stage in BATCHING_STAGES:
            streams = batch * 2
        else:
            streams = concurrency
        need = (
            self.cost.memory_mib_per_replica + streams * self.cost.memory_mib_per_stream
        ) * MEMORY_HEADROOM
        return math.ceil(need / MEMORY_STEP_MIB - 1e-9) * MEMORY_STEP_MIB

    def in_flight(self, devices: int, replicas: int) -> int:
        """Little's law with headroom: twice the requests one replica has in flight on average."""
        mean = devices * self.requests_per_device / replicas * self.request_s
        return max(MIN_CONCURRENCY, math.ceil(mean * CONCURRENCY_HEADROOM - 1e-9))

    def concurrency(self, devices: int, replicas: int, batch: int) -> int:
        if self.stage in STREAMING_STAGES:
            return max(1, math.ceil(devices / replicas))
        if self.stage in BATCHING_STAGES:
            return max(MIN_CONCURRENCY, batch * 4)
        if self.engine == c.LLM_LOCAL_ENGINE:
            # llama-cpp-python's server answers one request at a time (a lock around the model):
            # more in flight would only wait inside it, unseen by the stage's queue-wait metric.
            return LOCAL_LLM_SLOTS
        return self.in_flight(devices, replicas)

    def queue(self, devices: int, replicas: int, concurrency: int) -> int:
        if self.stage in BATCHING_STAGES:
            return max(concurrency * 4, MIN_QUEUE)
        return max(concurrency, self.in_flight(devices, replicas), MIN_QUEUE)


def _request_seconds(stage: str, cost: StageCost, workload: Workload) -> float:
    measured = cost.latency_ms_per_batch.get(cost.batch_sizes[0], 0.0) / 1000
    if stage == "tts":
        # A cloud engine's provider time is not this node's to measure, but a sentence is streamed
        # at least as fast as it plays (or the device stutters): its playback bounds it.
        return max(measured, workload.sentence_playback_s)
    return measured  # llm: a whole streamed reply as calibrate measured it


def _models(spec: PipelineSpec, profile: CostProfile, workload: Workload) -> tuple[_StageModel, ...]:
    out = []
    for stage in STAGES:
        override = spec.stages.get(stage)
        engine = spec.stages.engine(stage)
        cost = stage_cost(stage, spec, profile)
        default_cpu = LOCAL_LLM_CPU if engine == c.LLM_LOCAL_ENGINE else REPLICA_CPU[stage]
        out.append(
            _StageModel(
                stage=stage,
                engine=engine,
                cost=cost,
                cpu_limit=parse_cpu(override.cpu) if override.cpu else default_cpu,
                min_replicas=override.min_replicas,
                max_replicas=override.max_replicas,
                batch_override=override.batch_size,
                memory_override=parse_memory_mib(override.memory) if override.memory else None,
                units_per_device=workload.units_per_device_second(stage),
                requests_per_device=workload.requests_per_device_second(stage),
                request_s=_request_seconds(stage, cost, workload),
            )
        )
    return tuple(out)


class _Curve:
    """The plans for 1, 2, ... devices of one spec shape, as running maxima (the envelope), grown on
    demand. Per stage and device count: replicas needed, cores of demand, memory per replica."""

    def __init__(self, models: tuple[_StageModel, ...]) -> None:
        self.models = models
        self.replicas: list[list[int]] = [[] for _ in models]
        self.demand: list[list[float]] = [[] for _ in models]
        self.memory: list[list[float]] = [[] for _ in models]
        self.batch: list[list[int]] = [[] for _ in models]
        self.cpu_total: list[float] = []  # requests summed over stages, per device count
        self.memory_total: list[float] = []
        self.capped: list[bool] = []

    def __len__(self) -> int:
        return len(self.cpu_total)

    def grow(self, devices: int) -> None:
        for d in range(len(self) + 1, devices + 1):
            cpu = memory = 0.0
            capped = False
            for i, m in enumerate(self.models):
                replicas, demand, batch = m.raw(d)
                if d > 1:  # the envelope: never less than for fewer devices
                    replicas = max(replicas, self.replicas[i][-1])
                    demand = max(demand, self.demand[i][-1])
                conc = m.concurrency(d, replicas, batch)
                per_replica = m.memory_per_replica(d, replicas, batch, conc)
                if d > 1:
                    per_replica = max(per_replica, self.memory[i][-1])
                self.replicas[i].append(replicas)
                self.demand[i].append(demand)
                self.memory[i].append(per_replica)
                self.batch[i].append(batch)
                capped = capped or replicas > m.max_replicas
                placed = min(replicas, m.max_replicas)
                cpu += placed * _cpu_request(m, demand, placed)
                memory += placed * per_replica
            self.cpu_total.append(cpu)
            self.memory_total.append(memory)
            self.capped.append(capped)

    def fits(self, devices: int, budget: Budget) -> bool:
        self.grow(devices)
        i = devices - 1
        return not self.capped[i] and budget.holds(Usage(self.cpu_total[i], self.memory_total[i]))

    def supported(self, budget: Budget) -> int:
        """The most devices that fit (fits is monotonic on the envelope: bisect), up to MAX_DEVICES."""
        if not self.fits(1, budget):
            return 0
        low, high = 1, 2
        while high <= MAX_DEVICES and self.fits(high, budget):
            low, high = high, high * 2
        high = min(high, MAX_DEVICES + 1)
        while high - low > 1:
            mid = (low + high) // 2
            if self.fits(mid, budget):
                low = mid
            else:
                high = mid
        return low

    def stages(self, devices: int) -> dict[str, StagePlan]:
        self.grow(devices)
        return {m.stage: self._stage(i, m, devices) for i, m in enumerate(self.models)}

    def _stage(self, i: int, m: _StageModel, devices: int) -> StagePlan:
        needed = self.replicas[i][devices - 1]
        demand = self.demand[i][devices - 1]
        batch = self.batch[i][devices - 1]
        replicas = min(needed, m.max_replicas)
        conc = m.concurrency(devices, replicas, batch)
        raw_demand = devices * m.units_per_device * m.cost.cpu_at(batch)
        per_device = m.units_per_device * m.cost.cpu_at(batch)
        served = (
            int(replicas * m.cpu_limit * TARGET_UTILIZATION / per_device) if per_device > 0 else MAX_DEVICES
        )
        return StagePlan(
            replicas=replicas,
            cpu_limit=m.cpu_limit,
            cpu_request=_cpu_request(m, demand, replicas),
            memory_mib=self.memory[i][devices - 1],
            batch_size=batch,
            max_wait_ms=MAX_WAIT_MS[m.stage],
            max_concurrency=conc,
            devices=min(served, MAX_DEVICES),
            utilization=raw_demand / replicas / m.cpu_limit,
            capped=needed > m.max_replicas,
            engine=m.engine,
            queue_size=m.queue(devices, replicas, conc),
            needed_replicas=needed,
        )


def _cpu_request(m: _StageModel, demand: float, replicas: int) -> float:
    return min(m.cpu_limit, max(MIN_CPU_REQUEST, demand / replicas / TARGET_UTILIZATION))


@lru_cache(maxsize=32)
def _curve_for(stages_json: str, profile_json: str, workload: Workload) -> _Curve:
    spec = PipelineSpec.model_validate({"devices": 1, "stages": Stages.model_validate_json(stages_json)})
    return _Curve(_models(spec, CostProfile.model_validate_json(profile_json), workload))


def _curve(spec: PipelineSpec, profile: CostProfile, workload: Workload) -> _Curve:
    # Memoized on what the curve depends on (not devices, node size or node count): the plans for
    # every node size and the supported-devices search share one.
    return _curve_for(spec.stages.model_dump_json(by_alias=True), profile.model_dump_json(), workload)


def plan_for(
    devices: int, spec: PipelineSpec, profile: CostProfile, workload: Workload, node: NodeProfile, nodes: int
) -> Plan:
    stages = _curve(spec, profile, workload).stages(devices)
    return Plan(devices, node, nodes, stages, budget_for(node, nodes))


def max_devices(
    spec: PipelineSpec, profile: CostProfile, workload: Workload, node: NodeProfile, nodes: int
) -> int:
    """The most devices whose plan fits; every smaller count fits too (plans are monotonic)."""
    return _curve(spec, profile, workload).supported(budget_for(node, nodes))


def _binding(plan: Plan) -> tuple[str, Resource]:
    """The stage and resource that stop the plan from growing."""
    capped = [name for name, s in plan.stages.items() if s.capped]
    if capped:
        return capped[0], "replicas"
    cpu_share = plan.cpu_used / plan.budget.cpu if plan.budget.cpu else math.inf
    mem_share = plan.memory_used / plan.budget.memory_mib if plan.budget.memory_mib else math.inf
    if cpu_share >= mem_share:
        return max(plan.stages, key=lambda n: plan.stages[n].cpu_request * plan.stages[n].replicas), "cpu"
    return max(plan.stages, key=lambda n: plan.stages[n].memory_mib * plan.stages[n].replicas), "memory"


def make_plan(spec: PipelineSpec, profile: CostProfile, workload: Workload | None = None) -> Plan:
    """Raises NoMeasuredCost when a chosen engine has no measured cost in the profile."""
    workload = workload or Workload()
    node = spec.node()
    curve = _curve(spec, profile, workload)
    plan = plan_for(spec.devices, spec, profile, workload, node, spec.max_nodes)
    plan.supported_devices = curve.supported(plan.budget)
    edge = plan_for(
        min(plan.supported_devices + 1, MAX_DEVICES), spec, profile, workload, node, spec.max_nodes
    )
    plan.bottleneck, plan.binding = _binding(edge)
    sizes = [
        name
        for name, size in NODE_SIZES.items()
        if curve.fits(spec.devices, budget_for(size, spec.max_nodes))
    ]
    plan.smallest_node_size = sizes[0] if sizes else ""
    if plan.supported_devices == 0:
        one = plan_for(1, spec, profile, workload, node, spec.max_nodes)
        plan.problems.append(
            f"even one replica of each stage needs {format_cpu(one.cpu_used)} CPU and "
            f"{format_memory(one.memory_used)} memory; the budget is {format_cpu(plan.budget.cpu)} CPU and "
            f"{format_memory(plan.budget.memory_mib)} ({node.name} x {spec.max_nodes}, less system and Redis reserve)"
        )
    plan.recommendation = recommendation(plan, spec, profile, workload)
    return plan


def needed_usage(plan: Plan) -> Usage:
    """What the plan would request with every stage at the replicas its load needs (uncapped)."""
    return Usage.of(replace(s, replicas=s.needed_replicas) for s in plan.stages.values())


def recommendation(plan: Plan, spec: PipelineSpec, profile: CostProfile, workload: Workload) -> str:
    """What to change so the target fits, naming only values the schema accepts."""
    if plan.fits:
        return (
            f"{spec.devices} devices fit on {plan.node.name} x {plan.nodes} (up to {plan.supported_devices}; "
            f"{plan.binding}-bound on {plan.bottleneck} beyond that)"
        )
    here = f"{plan.node.name} x {plan.nodes} fits {plan.supported_devices}, {plan.binding}-bound on {plan.bottleneck}"
    changes: list[str] = []
    capped = {name: s for name, s in plan.stages.items() if s.capped}
    beyond = [name for name, s in capped.items() if s.needed_replicas > SCHEMA_MAX_REPLICAS]
    if beyond:
        names = ", ".join(
            f"{n} needs {capped[n].needed_replicas} replicas of {format_cpu(capped[n].cpu_limit)} CPU"
            for n in beyond
        )
        return (
            f"{spec.devices} devices are more than one pipeline serves: {names} (a stage may have at most "
            f"{SCHEMA_MAX_REPLICAS}); split the devices across pipelines; {here}"
        )
    changes += [f"stages.{n}.maxReplicas: {s.needed_replicas}" for n, s in capped.items()]
    need = needed_usage(plan)
    if plan.node.name != "custom":
        # The smallest node size that takes the target in the same node count, counting the raised
        # replicas.
        size = smallest_node_size(need, plan.nodes)
        if size:
            if size != plan.node.name:
                changes.append(f"nodeSize: {size}")
            return f"{spec.devices} devices need {'; '.join(changes)}; {here}"
    nodes = nodes_for(need, plan.node)
    if nodes > SCHEMA_MAX_NODES:
        return (
            f"{spec.devices} devices do not fit on {SCHEMA_MAX_NODES} nodes of {plan.node.name} (the most "
            f"maxNodes allows); use a bigger node size or split the devices across pipelines; {here}"
        )
    if nodes > plan.nodes:
        changes.append(f"maxNodes: {nodes} ({nodes} nodes of {plan.node.name})")
    return f"{spec.devices} devices need {'; '.join(changes)}; {here}"
