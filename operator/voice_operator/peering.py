"""Leader election between operator replicas, through kopf peering.

kopf has no leases: every replica writes a keep-alive (priority, lifetime, last seen) into the status
of a peering object, and a replica pauses all its handlers while another live replica has a higher
priority. Two live replicas with the SAME priority both pause (kopf's guard against double work), so
each replica needs its own priority: by default it is derived from the start time, older = higher,
so a replica that starts (a rollout, a rescheduled Pod) never pre-empts the one working now.

A replica that stops cleanly removes its keep-alive, so the next one takes over at once; one that is
killed is presumed dead when its keep-alive is older than its lifetime.

kopf 1.45 does not fail when the peering CRDs or the named object are missing: it starts, answers
its health check and stays paused forever, saying so only at DEBUG level. `preflight` turns that
into one clear error before kopf starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from voice_pipeline.common.errors import ConfigError

log = logging.getLogger(__name__)

GROUP = "kopf.dev"
VERSION = "v1"
NAMESPACED = ("KopfPeering", "kopfpeerings")
CLUSTER = ("ClusterKopfPeering", "clusterkopfpeerings")
CRD_FILE = "crds/kopf-peering.yaml"
CLUSTER_SCOPE = ""  # the "namespace" key of a cluster-wide lookup


KOPF_PEERING_LOGGER = "kopf._core.engines.peering"


class PeeringExitNotice(logging.Filter):
    """One line instead of kopf's traceback when a stopping replica cannot remove its keep-alive.

    At `helm uninstall` this is the expected end: Helm deletes the operator's ServiceAccount and
    RBAC while its Pod is still stopping, so the API answers 401/403 to the last keep-alive. Nothing
    is lost: the keep-alive expires after its lifetime (and the peering object goes with the
    release). Other exceptions on the way out (the API unreachable) are just as harmless.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith("Couldn't remove self from the peering"):
            exc = record.exc_info[1]
            status = getattr(exc, "status", None)
            record.msg = (
                "Couldn't remove self from the peering on the way out (%s%s); its keep-alive expires "
                "by itself after the peering lifetime"
            )
            record.args = (type(exc).__name__, f", HTTP {status}" if status else "")
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def default_priority(now_ns: int | None = None) -> int:
    """Minus the start time in microseconds: the longest-running replica has the highest priority,
    and two replicas tie only if they start in the same microsecond."""
    return -((time.time_ns() if now_ns is None else now_ns) // 1000)


def keepalive_seconds(lifetime: int) -> tuple[int, int]:
    """The range of kopf's keep-alive interval for a lifetime (kopf 1.45: min(lifetime, max(1,
    lifetime - randint(5, 10))), then at least 1 s)."""
    return max(1, min(lifetime, max(1, lifetime - 10))), max(1, min(lifetime, max(1, lifetime - 5)))


def peering_problem(name: str, clusterwide: bool, crd_served: bool, lookups: Mapping[str, int]) -> str | None:
    """What stops peering `name` from working, for a person; None when nothing does.

    `lookups` maps each watched namespace (CLUSTER_SCOPE with --all-namespaces) to the HTTP status
    of GETting the peering object there."""
    kind = CLUSTER[0] if clusterwide else NAMESPACED[0]
    escape = "or run a single operator without leader election: `voice-pipeline operator --standalone`"
    if not crd_served:
        return (
            f"leader election (--peering {name}) needs kopf's peering CRDs ({GROUP}/{VERSION}), which this "
            f"cluster does not serve: `kubectl apply -f {CRD_FILE}` (the Helm chart installs them), {escape}"
        )
    forbidden = sorted(ns for ns, status in lookups.items() if status in (401, 403))
    if forbidden:
        where = "cluster-wide" if forbidden == [CLUSTER_SCOPE] else "in namespace(s) " + ", ".join(forbidden)
        return (
            f"this operator may not read the {kind} '{name}' {where}: grant get, list, watch and patch on "
            f"{kind.lower()}s.{GROUP} (the Helm chart's Role does), {escape}"
        )
    missing = sorted(ns for ns, status in lookups.items() if status == 404)
    if not missing:
        return None
    manifest = (
        f'\'{{"apiVersion": "{GROUP}/{VERSION}", "kind": "{kind}", "metadata": {{"name": "{name}"}}}}\''
    )
    if clusterwide:
        create = f"`echo {manifest} | kubectl apply -f -`"
        return f"the {kind} '{name}' does not exist: create it with {create}, {escape}"
    creates = "; ".join(f"`echo {manifest} | kubectl -n {ns} apply -f -`" for ns in missing)
    return (
        f"the {kind} '{name}' does not exist in namespace(s) {', '.join(missing)} (kopf would wait "
        f"paused, reconciling nothing): create it with {creates} (the Helm chart creates it), {escape}"
    )


def preflight(api_client: Any, name: str, namespaces: Sequence[str], clusterwide: bool) -> None:
    """Raise ConfigError when peering `name` cannot work. An unreachable API server is not our verdict
    to give: log it and let kopf retry as it does for everything else."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = client.CustomObjectsApi(api_client)
    try:
        try:
            api.get_api_resources(GROUP, VERSION, _request_timeout=15)
            crd_served = True
        except ApiException as exc:
            if exc.status != 404:
                raise
            crd_served = False
        lookups: dict[str, int] = {}
        for ns in [CLUSTER_SCOPE] if clusterwide else namespaces:
            if not crd_served:
                break
            try:
                if clusterwide:
                    api.get_cluster_custom_object(GROUP, VERSION, CLUSTER[1], name, _request_timeout=15)
                else:
                    api.get_namespaced_custom_object(
                        GROUP, VERSION, ns, NAMESPACED[1], name, _request_timeout=15
                    )
                lookups[ns] = 200
            except ApiException as exc:
                lookups[ns] = int(exc.status or 0)
    except (ApiException, HTTPError, OSError) as exc:
        log.warning("could not check the peering '%s' before starting (%s); kopf will retry", name, exc)
        return
    problem = peering_problem(name, clusterwide, crd_served, lookups)
    if problem:
        raise ConfigError(problem)
