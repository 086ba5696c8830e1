"""What the operator remembers, and who writes which status field.

kopf gives two memos (kopf.Memo): the operator-wide one, filled once by the startup handler (the
API, the cost profile, one Prometheus client per URL: `OperatorContext`), and one per
VoicePipeline, a shallow copy of it, where that pipeline's loops keep what they carry between
rounds (`PipelineMemory`). Nothing lives in module globals; losing the memory on a restart only
delays a scale-down by one stabilization window.

Each status field has exactly one writer:
- the reconcile loop (handlers.reconciler): reconcile.RECONCILE_FIELDS, the plan and its
  conditions;
- the autoscaler loop (handlers.autoscaler, a round is autoscale_handler.autoscale_once):
  live.AUTOSCALER_FIELDS, what it saw and the replicas and batch sizes it chose. The reconcile reads those (the newest, from this memory when the watch
  lags) and applies them; it never writes them back, and the autoscaler never writes the plan.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import kopf

from voice_operator.kube import OperatorApi
from voice_operator.profiles import CostProfile
from voice_operator.prometheus import PrometheusClient, Snapshot


def owned(changes: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """The part of a status patch one writer may send."""
    return {k: v for k, v in changes.items() if k in fields}


@dataclass
class OperatorContext:
    """The operator-wide memo's one entry: made at startup, shared by every pipeline's loops."""

    api: OperatorApi
    profile: CostProfile
    image: str
    resync_s: float
    clients: dict[str, PrometheusClient] = field(default_factory=dict)

    def prometheus(self, url: str) -> PrometheusClient:
        if url not in self.clients:
            self.clients[url] = PrometheusClient(url)
        return self.clients[url]

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.clients.clear()


@dataclass
class PipelineMemory:
    """One VoicePipeline's per-resource memo entry."""

    window: deque[Snapshot] = field(default_factory=deque)  # the autoscaler's recent samples
    told_unconfigured: bool = False
    # The autoscaler's newest {"observed", "autoscaling"}, as it wrote them: the reconcile plans with
    # these even before the watch delivers them (else it would apply the previous replicas back).
    written: dict[str, Any] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # reconcile now, not at the resync
    # The status.autoscaling revision the reconcile last applied: objects it changes for a newer one
    # change because the autoscaler acted (whose own Event says so), not by hand or by a replan.
    applied_revision: int = 0

    def request_reconcile(self) -> None:
        self.wake.set()


OPERATOR_KEY = "operator"
PIPELINE_KEY = "pipeline"


def operator_context(memo: kopf.Memo) -> OperatorContext:
    context = memo[OPERATOR_KEY]
    assert isinstance(context, OperatorContext), "the startup handler fills the operator-wide memo"
    return context


def pipeline_memory(memo: kopf.Memo) -> PipelineMemory:
    memory = memo.setdefault(PIPELINE_KEY, PipelineMemory())
    assert isinstance(memory, PipelineMemory)
    return memory
