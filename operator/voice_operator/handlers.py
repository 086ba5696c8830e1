"""Every kopf registration of the operator, each a thin shim; the decisions live in reconcile,
capacity and autoscaler, one autoscaler round in autoscale_handler.

Per VoicePipeline two daemons run while it exists (kopf starts them on creation and on operator
start, stops them on deletion or when this replica stops leading):
- `reconciler`: the level-based reconcile (observe -> plan -> apply -> status). It runs at once,
  then whenever it is woken (a spec change, new autoscaler targets) and at least every resync
  (which restores hand-edited children). It is the only writer of the plan's status fields.
- `autoscaler`: a round every spec.autoscaling.intervalSeconds; the only writer of
  status.observed and status.autoscaling.
They share the pipeline's memo (context.PipelineMemory); the startup handler fills the
operator-wide memo (context.OperatorContext), which kopf copies into each pipeline's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import start_http_server

from voice_operator.autoscale_handler import autoscale_once
from voice_operator.context import (
    OPERATOR_KEY,
    OperatorContext,
    PipelineMemory,
    operator_context,
    owned,
    pipeline_memory,
)
from voice_operator.kube import RealKubeApi
from voice_operator.live import newest_autoscaler_fields
from voice_operator.profiles import load_profile
from voice_operator.reconcile import RECONCILE_FIELDS, Outcome, reconcile, status_patch
from voice_pipeline import contract as c

log = logging.getLogger(__name__)
RESYNC_SECONDS = float(os.environ.get("VP_OPERATOR_RESYNC_SECONDS", "60"))
API_RETRY_S = 15.0  # after the API server refused or failed: retry later, not in a storm
RESOURCE = (c.API_GROUP, c.API_VERSION, c.PLURAL)
AUTOSCALED = "Autoscaled"  # the reconcile's reason for applying the autoscaler's targets


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    memo[OPERATOR_KEY] = OperatorContext(
        api=RealKubeApi(client.ApiClient()),
        profile=load_profile(os.environ.get("VP_OPERATOR_PROFILE") or None),
        image=os.environ.get("VP_OPERATOR_IMAGE", ""),
        resync_s=RESYNC_SECONDS,
    )
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = f"{c.API_GROUP}/finalizer"
    settings.watching.server_timeout = 300
    _serve_metrics()
    log.info("operator ready (resync every %.0f s)", RESYNC_SECONDS)


def _serve_metrics() -> None:
    port = int(os.environ.get("VP_OPERATOR_METRICS_PORT", "8081") or 0)
    if not port:
        return
    try:
        start_http_server(port, addr=os.environ.get("VP_OPERATOR_METRICS_ADDR", "0.0.0.0"))
    except OSError as exc:  # the metrics are a report, never a reason not to run the operator
        log.error("operator metrics not served on port %d: %s (set --metrics-port)", port, exc)
        return
    log.info("operator metrics on :%d/metrics", port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if OPERATOR_KEY in memo:
        await operator_context(memo).close()


@kopf.on.update(*RESOURCE, field="spec")
def spec_changed(memo: kopf.Memo, **_: Any) -> None:
    """The user's new intent: reconcile now rather than at the next resync."""
    pipeline_memory(memo).request_reconcile()


def _post(body: kopf.Body, events: list[tuple[str, str, str]]) -> None:
    for type_, reason, message in events:
        (kopf.warn if type_ == "Warning" else kopf.info)(body, reason=reason, message=message[:1000])


def reconcile_once(body: kopf.Body, ctx: OperatorContext, memory: PipelineMemory) -> Outcome:
    """One reconcile pass with the autoscaler's newest targets; writes the reconcile's status
    fields only. Blocking (the API client is synchronous): runs in a thread."""
    status = dict(body.get("status") or {})
    newest = newest_autoscaler_fields(status, memory.written)
    # Told by the data, not by a flag the autoscaler sets beside it (a pass running meanwhile
    # could see the new targets and not yet the flag, and call the change "Restored").
    revision = int((newest.get("autoscaling") or {}).get("revision", 0))
    cause = AUTOSCALED if revision > memory.applied_revision else ""
    fresh = {**dict(body), "status": {**status, **newest}}
    outcome = reconcile(fresh, ctx.api, ctx.profile, _now, ctx.image, cause)
    memory.applied_revision = revision
    changes = owned(status_patch(status, outcome.status), RECONCILE_FIELDS)
    if changes:
        ctx.api.patch_status(str(body.metadata.namespace), str(body.metadata.name), changes)
    # The autoscaler posts its own Event per action; "Autoscaled N objects" would repeat it.
    outcome.events = [e for e in outcome.events if e[1] != cause]
    return outcome


@kopf.daemon(*RESOURCE, cancellation_timeout=10)
async def reconciler(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    ctx, memory = operator_context(memo), pipeline_memory(memo)
    where = f"{body.metadata.namespace}/{body.metadata.name}"
    while True:
        memory.wake.clear()
        wait = ctx.resync_s
        try:
            outcome = await asyncio.to_thread(reconcile_once, body, ctx, memory)
        except ApiException as exc:
            log.warning(
                "%s: Kubernetes API error %s: %s; again in %.0f s", where, exc.status, exc.reason, API_RETRY_S
            )
            wait = API_RETRY_S
        except Exception:  # a bug must not end the loop: say it, and try again later
            log.exception("%s: reconcile failed; again in %.0f s", where, API_RETRY_S)
            wait = API_RETRY_S
        else:
            _post(body, outcome.events)
            applied = f"applied {', '.join(outcome.applied)}" if outcome.applied else "no change"
            log.info("%s: reconciled generation %s: %s", where, body.metadata.get("generation"), applied)
        with contextlib.suppress(TimeoutError):  # the resync: nothing woke it for a while
            await asyncio.wait_for(memory.wake.wait(), timeout=wait)


@kopf.daemon(*RESOURCE, cancellation_timeout=10)
async def autoscaler(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    ctx, memory = operator_context(memo), pipeline_memory(memo)
    # A loop that starts (operator start, or this replica leading again) trusts the status, not
    # what it wrote before another replica may have written newer targets.
    memory.written = None
    where = f"{body.metadata.namespace}/{body.metadata.name}"
    while True:
        try:
            done = await autoscale_once(body, ctx, memory, time.time)
        except Exception:  # an API error or a bug: this round is lost, the loop goes on
            log.exception("%s: autoscaler round failed; again in %.0f s", where, API_RETRY_S)
            await asyncio.sleep(API_RETRY_S)
            continue
        _post(body, done.events)
        await asyncio.sleep(done.next_in_s)
