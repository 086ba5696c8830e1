"""kopf registrations: thin shims that call `reconcile` and translate its outcome for kopf.

All decisions live in reconcile/capacity; here we only wire events, status patches and Events.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import kopf

from voice_operator.kube import KubeApi, RealKubeApi
from voice_operator.profiles import CostProfile, load_profile
from voice_operator.reconcile import reconcile, status_patch
from voice_pipeline import contract as c

log = logging.getLogger(__name__)
RESYNC_SECONDS = float(os.environ.get("VP_OPERATOR_RESYNC_SECONDS", "60"))
_state: dict[str, Any] = {}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api() -> KubeApi:
    return _state["api"]  # type: ignore[no-any-return]


def _profile() -> CostProfile:
    return _state["profile"]  # type: ignore[no-any-return]


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    _state["api"] = RealKubeApi(client.ApiClient())
    _state["profile"] = load_profile(os.environ.get("VP_OPERATOR_PROFILE") or None)
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = f"{c.API_GROUP}/finalizer"
    settings.watching.server_timeout = 300
    log.info("operator ready (resync every %.0f s)", RESYNC_SECONDS)


def _run(body: kopf.Body, patch: kopf.Patch) -> None:
    from kubernetes.client.exceptions import ApiException

    from voice_operator.autoscale_handler import latest_autoscaling

    fresh = dict(body)
    status = dict(body.get("status") or {})
    autoscaling = latest_autoscaling(str(body.metadata.uid), status)
    if autoscaling is not None:  # the autoscaler's newest targets, even before the watch shows them
        fresh["status"] = {**status, "autoscaling": autoscaling}
    try:
        outcome = reconcile(fresh, _api(), _profile(), _now, os.environ.get("VP_OPERATOR_IMAGE", ""))
    except ApiException as exc:  # the API server refused or failed: retry later, not in a storm
        raise kopf.TemporaryError(f"Kubernetes API error {exc.status}: {exc.reason}", delay=15) from exc
    changes = status_patch(dict(body.get("status") or {}), outcome.status)
    for key, value in changes.items():
        patch.status[key] = value
    for type_, reason, message in outcome.events:
        (kopf.warn if type_ == "Warning" else kopf.info)(body, reason=reason, message=message[:1000])
    if outcome.applied:
        log.info("%s/%s: applied %s", body.metadata.namespace, body.metadata.name, ", ".join(outcome.applied))


@kopf.on.create(c.API_GROUP, c.API_VERSION, c.PLURAL)
@kopf.on.update(c.API_GROUP, c.API_VERSION, c.PLURAL, field="spec")
@kopf.on.resume(c.API_GROUP, c.API_VERSION, c.PLURAL)
def on_change(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    _run(body, patch)


@kopf.timer(
    c.API_GROUP, c.API_VERSION, c.PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, idle=0
)
def resync(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Level-based safety net: restores hand-edited children and refreshes readiness."""
    _run(body, patch)
