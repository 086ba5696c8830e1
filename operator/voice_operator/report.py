"""Human-readable tables of plans (the `plan` command). Pure string building."""

from __future__ import annotations

from collections.abc import Callable

from voice_operator.capacity import Plan
from voice_operator.profiles import CostProfile
from voice_operator.quantity import format_cpu, format_memory
from voice_pipeline.contract import STAGES


def _provenance(profile: CostProfile) -> str:
    m = profile.measured
    machine = m.get("machine", {})
    line = f"cost profile measured {m.get('date', '?')} on {machine.get('cores', '?')} cores ({machine.get('cpu', '?')})"
    # Entries measured apart (calibrate --only) say so: costs move with the machine.
    apart: dict[str, list[str]] = {}
    for key, cost in profile.stages.items():
        if cost.measured:
            where = f"{str(cost.measured.get('date', '?'))[:10]} on {cost.measured.get('machine', {}).get('cpu', '?')}"
            apart.setdefault(where, []).append(key)
    return line + "".join(f"; {', '.join(keys)} {where}" for where, keys in apart.items())


def engines_line(plan: Plan) -> str:
    return "engines: " + ", ".join(f"{name} {s.engine}" for name, s in plan.stages.items() if s.engine)


def plan_table(plan: Plan, profile: CostProfile) -> str:
    rows = [
        f"{'stage':8} {'engine':>10} {'replicas':>8} {'cpu':>6} {'cpu req':>8} {'memory':>8} {'batch':>5} {'wait':>5} {'conc':>5} {'queue':>5} {'devices':>8} {'util':>5}"
    ]
    for name in STAGES:
        s = plan.stages[name]
        rows.append(
            f"{name:8} {s.engine or '-':>10} {s.replicas:>8} {format_cpu(s.cpu_limit):>6} {format_cpu(s.cpu_request):>8} {format_memory(s.memory_mib):>8} "
            f"{s.batch_size:>5} {s.max_wait_ms:>5} {s.max_concurrency:>5} {s.queue_size:>5} {s.devices:>8} {s.utilization:>5.2f}"
        )
    rows += [
        "",
        f"target {plan.target_devices} devices on {plan.node.name} x {plan.nodes}: {'fits' if plan.fits else 'DOES NOT FIT'}",
        f"budget {format_cpu(plan.budget.cpu)} CPU / {format_memory(plan.budget.memory_mib)}, "
        f"used {format_cpu(plan.cpu_used)} CPU / {format_memory(plan.memory_used)}",
        f"supported devices: {plan.supported_devices} (bottleneck {plan.bottleneck}, {plan.binding}-bound)",
        plan.recommendation,
        *plan.problems,
        engines_line(plan),
        _provenance(profile),
    ]
    return "\n".join(rows)


def compare_table(plans: dict[str, Plan], profile: CostProfile) -> str:
    """The capacity report's table, derived: one column per node size."""

    def row(label: str, cell: Callable[[Plan], str]) -> str:
        return f"{label:22}" + "".join(f"{cell(p):>16}" for p in plans.values())

    rows = [
        f"{'':22}" + "".join(f"{size:>16}" for size in plans),
        row("target devices", lambda p: str(p.target_devices)),
        row("supported devices", lambda p: str(p.supported_devices)),
        row("fits target", lambda p: "yes" if p.fits else "no"),
        row("bottleneck", lambda p: f"{p.bottleneck} ({p.binding})"),
        row(
            "budget cpu / memory",
            lambda p: f"{format_cpu(p.budget.cpu)} / {format_memory(p.budget.memory_mib)}",
        ),
    ]
    for name in STAGES:

        def replicas(p: Plan, n: str = name) -> str:
            return f"{p.stages[n].replicas} / {p.stages[n].devices}"

        rows.append(row(f"{name} replicas/devices", replicas))
    rows.append("")
    rows.append(engines_line(next(iter(plans.values()))))
    rows += [f"{size}: {p.recommendation}" for size, p in plans.items()]
    rows.append(_provenance(profile))
    return "\n".join(rows)
