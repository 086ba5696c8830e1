"""The capacity model: spec + node + measured costs + workload -> a plan. PURE.

For each stage, the work the target devices bring (workload.units_per_device_second x devices)
times the measured CPU cost per unit at the batch size that load actually forms gives the cores
the stage needs; replicas of a fixed CPU shape are added until each runs at or below
TARGET_UTILIZATION (headroom keeps queueing delay, and so latency, low). Memory is the measured
model footprint per replica plus a per-stream part. The plan fits when the sum of requests fits
the node budget (node size x maxNodes, less what the node keeps for itself and Redis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from voice_operator.profiles import NODE_SIZES, CostProfile, NodeProfile, Reserve, StageCost, Workload
from voice_operator.quantity import format_cpu, format_memory, parse_cpu, parse_memory_mib
from voice_operator.spec import PipelineSpec
from voice_pipeline.contract import STAGES

TARGET_UTILIZATION = 0.7
MEMORY_HEADROOM = 1.25
MIN_CPU_REQUEST = 0.05
# Per-replica CPU limits: ASR runs its model on 2 threads; the others are single-threaded hot paths.
REPLICA_CPU = {"gateway": 1.0, "vad": 1.0, "asr": 2.0, "llm": 0.5, "tts": 1.0}
MAX_WAIT_MS = {"gateway": 0, "vad": 2, "asr": 20, "llm": 0, "tts": 0}
STREAMING_STAGES = ("gateway", "vad")  # hold per-session state for every connected device
MAX_DEVICES = 100_000

Resource = Literal["cpu", "memory", "replicas"]


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

    def as_status(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "cpu": format_cpu(self.cpu_limit),
            "cpuRequest": format_cpu(self.cpu_request),
            "memory": format_memory(self.memory_mib),
            "batchSize": self.batch_size,
            "maxWaitMs": self.max_wait_ms,
            "maxConcurrency": self.max_concurrency,
            "devices": self.devices,
            "utilization": round(self.utilization, 3),
        }


@dataclass(frozen=True)
class Budget:
    cpu: float
    memory_mib: float


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
    def cpu_used(self) -> float:
        return sum(s.cpu_request * s.replicas for s in self.stages.values())

    @property
    def memory_used(self) -> float:
        return sum(s.memory_mib * s.replicas for s in self.stages.values())

    @property
    def fits(self) -> bool:
        return (
            not any(s.capped for s in self.stages.values())
            and self.cpu_used <= self.budget.cpu + 1e-9
            and self.memory_used <= self.budget.memory_mib + 1e-9
        )

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


def _batch_size(cost: StageCost, arrivals_per_replica: float, override: int | None) -> int:
    """Requests waiting together at one replica (Little's law on the batch latency), rounded down to
    a measured batch size: the cost model never assumes a batch the load does not form."""
    if override:
        return override
    latency_s = cost.latency_ms_per_batch.get(1, 50.0) / 1000
    concurrent = max(1.0, arrivals_per_replica * latency_s)
    fitting = [b for b in cost.batch_sizes if b <= concurrent]
    return fitting[-1] if fitting else cost.batch_sizes[0]


def plan_stage(
    stage: str, devices: int, spec: PipelineSpec, cost: StageCost, workload: Workload
) -> StagePlan:
    override = spec.stages.get(stage)
    cpu_limit = parse_cpu(override.cpu) if override.cpu else REPLICA_CPU[stage]
    units = devices * workload.units_per_device_second(stage)
    replicas = max(override.min_replicas, 1)
    batch = cost.batch_sizes[0]
    # Batch size depends on the load per replica and replicas on the cost at that batch: iterate.
    for _ in range(4):
        arrivals = (
            units / replicas / max(workload.utterance_s, 1e-9)
            if stage in ("vad", "asr")
            else units / replicas
        )
        batch = _batch_size(cost, arrivals, override.batch_size)
        demand = units * cost.cpu_at(batch)
        needed = max(override.min_replicas, 1, math.ceil(demand / (cpu_limit * TARGET_UTILIZATION) - 1e-9))
        if needed == replicas:
            break
        replicas = needed
    capped = replicas > override.max_replicas
    replicas = min(replicas, override.max_replicas)
    demand = units * cost.cpu_at(batch)
    per_replica_demand = demand / replicas
    cpu_request = min(cpu_limit, max(MIN_CPU_REQUEST, per_replica_demand / TARGET_UTILIZATION))
    streams = math.ceil(devices / replicas) if stage in STREAMING_STAGES else batch * 2
    memory = (
        parse_memory_mib(override.memory)
        if override.memory
        else (cost.memory_mib_per_replica + streams * cost.memory_mib_per_stream) * MEMORY_HEADROOM
    )
    per_device = workload.units_per_device_second(stage) * cost.cpu_at(batch)
    served = int(replicas * cpu_limit * TARGET_UTILIZATION / per_device) if per_device > 0 else MAX_DEVICES
    return StagePlan(
        replicas=replicas,
        cpu_limit=cpu_limit,
        cpu_request=cpu_request,
        memory_mib=memory,
        batch_size=batch,
        max_wait_ms=MAX_WAIT_MS[stage],
        max_concurrency=max(1, math.ceil(devices / replicas))
        if stage in STREAMING_STAGES
        else max(4, batch * 4),
        devices=min(served, MAX_DEVICES),
        utilization=per_replica_demand / cpu_limit,
        capped=capped,
    )


def stage_cost(stage: str, spec: PipelineSpec, profile: CostProfile) -> StageCost:
    """The measured cost of the stage's configured engine (`stage:engine`), else the stage default."""
    engine = spec.stages.get(stage).engine
    return profile.stages.get(f"{stage}:{engine}") or profile.stages[stage]


def plan_for(
    devices: int, spec: PipelineSpec, profile: CostProfile, workload: Workload, node: NodeProfile, nodes: int
) -> Plan:
    stages: dict[str, StagePlan] = {
        s: plan_stage(s, devices, spec, stage_cost(s, spec, profile), workload) for s in STAGES
    }
    return Plan(devices, node, nodes, stages, budget_for(node, nodes))


def max_devices(
    spec: PipelineSpec, profile: CostProfile, workload: Workload, node: NodeProfile, nodes: int
) -> int:
    """The most devices whose plan fits (plans grow monotonically with devices: bisect)."""
    if not plan_for(1, spec, profile, workload, node, nodes).fits:
        return 0
    low, high = 1, 2
    while high < MAX_DEVICES and plan_for(high, spec, profile, workload, node, nodes).fits:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if plan_for(mid, spec, profile, workload, node, nodes).fits:
            low = mid
        else:
            high = mid
    return low


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
    workload = workload or Workload()
    node = spec.node()
    plan = plan_for(spec.devices, spec, profile, workload, node, spec.max_nodes)
    plan.supported_devices = max_devices(spec, profile, workload, node, spec.max_nodes)
    edge = plan_for(plan.supported_devices + 1, spec, profile, workload, node, spec.max_nodes)
    plan.bottleneck, plan.binding = _binding(edge)
    sizes = [
        name
        for name, size in NODE_SIZES.items()
        if plan_for(spec.devices, spec, profile, workload, size, spec.max_nodes).fits
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


def recommendation(plan: Plan, spec: PipelineSpec, profile: CostProfile, workload: Workload) -> str:
    if plan.fits:
        return (
            f"{spec.devices} devices fit on {plan.node.name} x {plan.nodes} (up to {plan.supported_devices}; "
            f"{plan.binding}-bound on {plan.bottleneck} beyond that)"
        )
    here = f"{plan.node.name} fits {plan.supported_devices}, {plan.binding}-bound on {plan.bottleneck}"
    capped = [name for name, s in plan.stages.items() if s.capped]
    if capped:
        limits = ", ".join(f"stages.{n}.maxReplicas={spec.stages.get(n).max_replicas}" for n in capped)
        return (
            f"{spec.devices} devices need more replicas than {limits} allows; raise it (and maxNodes); {here}"
        )
    if plan.smallest_node_size and plan.node.name != "custom":
        return f"{spec.devices} devices need {plan.smallest_node_size}; {here}"
    for nodes in range(plan.nodes + 1, 101):
        if plan_for(spec.devices, spec, profile, workload, plan.node, nodes).fits:
            return (
                f"{spec.devices} devices need {nodes} nodes of {plan.node.name} (maxNodes: {nodes}); {here}"
            )
    return f"{spec.devices} devices do not fit on 100 nodes of {plan.node.name}; {here}"
