"""Run the operator in this process (what `voice-pipeline operator` does)."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def run_operator(
    namespaces: list[str], all_namespaces: bool, standalone: bool, peering: str, liveness: str
) -> int:
    import kopf

    import voice_operator.autoscale_handler  # registers the autoscaling timer
    import voice_operator.handlers  # noqa: F401  (registers the handlers)

    url = urlparse(liveness)
    endpoint = (
        f"http://{url.hostname or '0.0.0.0'}:{url.port or 8080}{url.path or '/healthz'}" if liveness else None
    )
    settings = kopf.OperatorSettings()
    # Watching named namespaces needs no cluster-wide list/watch of namespaces and CRDs (kopf's
    # scanning): without this, the chart's namespaced Role would log "Not enough permissions" warnings.
    settings.scanning.disabled = bool(namespaces) and not all_namespaces
    asyncio.run(
        kopf.operator(
            settings=settings,
            standalone=standalone,
            peering_name=None if standalone else peering,
            namespaces=namespaces or (),
            clusterwide=all_namespaces or not namespaces,
            liveness_endpoint=endpoint,
        )
    )
    return 0
