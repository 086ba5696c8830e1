"""Run the operator in this process (what `voice-pipeline operator` does)."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def run_operator(
    namespaces: list[str],
    all_namespaces: bool,
    standalone: bool,
    peering: str,
    liveness: str,
    priority: int | None = None,
    peering_lifetime: int = 60,
) -> int:
    import kopf

    import voice_operator.handlers  # noqa: F401  (registers every handler and daemon)
    from voice_operator import peering as leader

    url = urlparse(liveness)
    endpoint = (
        f"http://{url.hostname or '0.0.0.0'}:{url.port or 8080}{url.path or '/healthz'}" if liveness else None
    )
    logging.getLogger(leader.KOPF_PEERING_LOGGER).addFilter(leader.PeeringExitNotice())
    settings = kopf.OperatorSettings()
    # Watching named namespaces needs no cluster-wide list/watch of namespaces and CRDs (kopf's
    # scanning): without this, the chart's namespaced Role would log "Not enough permissions" warnings.
    settings.scanning.disabled = bool(namespaces) and not all_namespaces
    clusterwide = all_namespaces or not namespaces
    if not standalone:
        leader.preflight(_api_client(), peering, namespaces, clusterwide)
        priority = leader.default_priority() if priority is None else priority
        settings.peering.lifetime = peering_lifetime
        low, high = leader.keepalive_seconds(peering_lifetime)
        log.info(
            "leader election: peering '%s', priority %d, keep-alive every %d-%d s, lifetime %d s "
            "(the live replica with the highest priority works; the others stand by)",
            peering, priority, low, high, peering_lifetime,
        )  # fmt: skip
    asyncio.run(
        kopf.operator(
            settings=settings,
            standalone=standalone,
            priority=None if standalone else priority,
            peering_name=None if standalone else peering,
            namespaces=namespaces or (),
            clusterwide=clusterwide,
            liveness_endpoint=endpoint,
        )
    )
    return 0


def _api_client() -> object:
    """The same credentials the handlers use: in-cluster, else KUBECONFIG."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()
