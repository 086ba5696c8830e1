"""The operator's two loops per VoicePipeline (handlers.reconciler, handlers.autoscaler) as one round
each, on a fake Kubernetes API and a fake Prometheus: who writes which status field, and that the
reconcile applies the autoscaler's newest replicas instead of restoring the plan's."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kopf

from voice_operator.autoscale_handler import autoscale_once
from voice_operator.context import OperatorContext, PipelineMemory
from voice_operator.handlers import reconcile_once
from voice_operator.live import AUTOSCALER_FIELDS, newest_autoscaler_fields
from voice_operator.reconcile import RECONCILE_FIELDS

from .test_autoscaling_io import fake_prometheus, vector
from .test_manifests_reconcile import PROFILE, FakeApi, body


class StatusApi(FakeApi):
    """FakeApi plus the status subresource: merge patches land in `status`, each one recorded."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__()
        self.status = status
        self.patches: list[dict[str, Any]] = []

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.patches.append(copy.deepcopy(status))
        self.status.update(copy.deepcopy(status))


def pipeline(status: dict[str, Any], **spec: Any) -> kopf.Body:
    raw = body(8, status=status, **spec)
    return kopf.Body({"apiVersion": "voice.pipeline.dev/v1alpha1", "kind": "VoicePipeline", **raw})


def asr_replicas(api: FakeApi) -> int:
    return int(api.objects[("Deployment", "office-asr")]["spec"]["replicas"])


def test_the_newest_autoscaler_fields_win_by_revision_and_this_process_wins_ties() -> None:
    shown = {"observed": {"time": "t1"}, "autoscaling": {"revision": 2, "stages": {"asr": {"replicas": 2}}}}
    mine = {"observed": {"time": "t2"}, "autoscaling": {"revision": 2, "stages": {"asr": {"replicas": 3}}}}
    assert newest_autoscaler_fields(shown, None) == shown  # nothing written by this process yet
    assert newest_autoscaler_fields(shown, mine) == mine  # same revision: the watch lags behind us
    later = {**shown, "autoscaling": {"revision": 3, "stages": {}}}
    assert newest_autoscaler_fields(later, mine) == later  # another process acted since
    assert newest_autoscaler_fields({"plan": {}}, None) == {}


def test_a_round_of_each_loop_writes_only_its_own_fields_and_the_reconcile_keeps_the_autoscalers_replicas() -> (
    None
):
    status: dict[str, Any] = {}
    api = StatusApi(status)
    ctx = OperatorContext(api=api, profile=PROFILE, image="img:1", resync_s=60)
    memory = PipelineMemory()
    autoscaling = {"prometheusUrl": "http://prometheus", "intervalSeconds": 5}
    vp = pipeline(status, autoscaling=autoscaling)

    first = reconcile_once(vp, ctx, memory)
    assert first.applied and asr_replicas(api) == 1
    assert api.patches and all(set(p) <= RECONCILE_FIELDS for p in api.patches)

    # ASR busy beyond its allotted CPU: the autoscaler scales it out.
    ctx.clients["http://prometheus"] = fake_prometheus({
        "busy_seconds": vector(({"stage": "asr"}, 1.9), ({"stage": "vad"}, 0.05)),
        'outcome=~"ok|error"': vector(({"stage": "asr"}, 0.6), ({"stage": "vad"}, 20)),
        "voice_gateway_sessions": vector(({}, 8)),
    })  # fmt: skip
    patches_before = len(api.patches)
    done = asyncio.run(autoscale_once(pipeline(status, autoscaling=autoscaling), ctx, memory, lambda: 1000.0))
    assert done.next_in_s == 5
    scaled = [m for _, reason, m in done.events if reason == "ScaledUp"]
    assert scaled and scaled[0].startswith("asr 1 -> ")
    assert len(api.patches) == patches_before + 1 and set(api.patches[-1]) <= AUTOSCALER_FIELDS
    assert memory.wake.is_set()
    target = status["autoscaling"]["stages"]["asr"]["replicas"]
    assert target > 1

    # The reconcile applies the new target, even from a body whose status the watch has not
    # updated yet, and says so only through the autoscaler's own Event.
    stale = pipeline({k: v for k, v in status.items() if k not in AUTOSCALER_FIELDS}, autoscaling=autoscaling)
    applied = reconcile_once(stale, ctx, memory)
    assert asr_replicas(api) == target and applied.applied == ["Deployment/office-asr"]
    assert applied.events == [] and memory.applied_revision == status["autoscaling"]["revision"]
    # ... and the next resync of the same state writes nothing: no Restored, no replicas back.
    writes, patches = len(api.writes), len(api.patches)
    again = reconcile_once(stale, ctx, memory)
    assert again.applied == [] and again.events == [] and len(api.writes) == writes
    assert asr_replicas(api) == target and all(set(p) <= RECONCILE_FIELDS for p in api.patches[patches:])


def test_without_a_prometheus_url_the_autoscaler_says_so_once_and_writes_nothing() -> None:
    status: dict[str, Any] = {}
    api = StatusApi(status)
    ctx = OperatorContext(api=api, profile=PROFILE, image="img:1", resync_s=60)
    memory = PipelineMemory()
    reconcile_once(pipeline(status), ctx, memory)
    patches = len(api.patches)
    rounds = [asyncio.run(autoscale_once(pipeline(status), ctx, memory, lambda: 10.0)) for _ in range(3)]
    assert [len(r.events) for r in rounds] == [1, 0, 0] and rounds[0].events[0][1] == "AutoscalingInactive"
    assert len(api.patches) == patches and not memory.wake.is_set()


def test_the_autoscaler_waits_for_the_reconcile_of_a_new_generation() -> None:
    ctx = OperatorContext(api=StatusApi({}), profile=PROFILE, image="", resync_s=60)
    raw = pipeline({"observedGeneration": 1})
    raw["metadata"]["generation"] = 2
    done = asyncio.run(autoscale_once(kopf.Body(raw), ctx, PipelineMemory(), lambda: 1.0))
    assert done.events == [] and done.next_in_s < 5
