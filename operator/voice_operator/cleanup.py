"""`voice-pipeline cleanup`: delete a namespace's VoicePipelines and wait until they are gone.

The Helm chart runs this as a pre-delete hook. Without it `helm uninstall` strands every
VoicePipeline: Helm deletes custom resources last, after the operator's Deployment and its RBAC,
but the operator puts a finalizer on each VoicePipeline (kopf timers need one to stop cleanly), and
with its RoleBinding gone nobody may remove it. Deleting the pipelines first, while the operator
still runs, lets it drop its finalizer and lets the garbage collector take the stage objects.

If no operator answers (operator.enabled=false and none elsewhere, or it crashed), the finalizer
is removed after `--force-after` seconds so an uninstall never hangs; the owned objects are then
still collected through their owner references.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


class PipelineStore(Protocol):
    """The four calls cleanup needs; the real one is the kubernetes client, tests use a fake."""

    def pipelines(self, namespace: str) -> dict[str, list[str]]:
        """VoicePipeline name -> its finalizers."""
        ...

    def delete(self, namespace: str, name: str) -> None: ...

    def set_finalizers(self, namespace: str, name: str, finalizers: list[str]) -> None: ...


@dataclass
class CleanupResult:
    deleted: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)  # finalizer removed by us, not by the operator
    remaining: list[str] = field(default_factory=list)  # still present at the timeout

    @property
    def ok(self) -> bool:
        return not self.remaining


def cleanup(
    store: PipelineStore,
    namespace: str,
    finalizer: str,
    timeout: float = 120.0,
    force_after: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll: float = 1.0,
) -> CleanupResult:
    """Delete every VoicePipeline in `namespace`; wait for them to disappear; after `force_after`
    seconds remove only the operator's own `finalizer` from those still present (never others')."""
    result = CleanupResult()
    started = clock()
    for name in sorted(store.pipelines(namespace)):
        store.delete(namespace, name)
        result.deleted.append(name)
    while True:
        present = store.pipelines(namespace)
        if not present:
            return result
        waited = clock() - started
        if waited >= timeout:
            result.remaining = sorted(present)
            return result
        if waited >= force_after:
            for name, finalizers in sorted(present.items()):
                if finalizer in finalizers:
                    store.set_finalizers(namespace, name, [f for f in finalizers if f != finalizer])
                    if name not in result.forced:
                        result.forced.append(name)
        sleep(poll)


class KubePipelineStore:
    """VoicePipelines through the kubernetes client (in-cluster config or KUBECONFIG)."""

    def __init__(self, api_client: Any, selector: str = "") -> None:
        from kubernetes import client

        from voice_pipeline import contract as c

        self.api = client.CustomObjectsApi(api_client)
        self.group, self.version, self.plural = c.API_GROUP, c.API_VERSION, c.PLURAL
        self.selector = selector

    def pipelines(self, namespace: str) -> dict[str, list[str]]:
        body: Any = self.api.list_namespaced_custom_object(
            self.group, self.version, namespace, self.plural, label_selector=self.selector
        )
        return {
            item["metadata"]["name"]: list(item["metadata"].get("finalizers") or [])
            for item in body.get("items", [])
        }

    def delete(self, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(self.group, self.version, namespace, self.plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def set_finalizers(self, namespace: str, name: str, finalizers: list[str]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.patch_namespaced_custom_object(
                self.group,
                self.version,
                namespace,
                self.plural,
                name,
                {"metadata": {"finalizers": finalizers}},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cleanup",
        help="delete a namespace's VoicePipelines and wait until they are gone (Helm pre-delete hook)",
        description="Deletes every VoicePipeline in the namespace while the operator still runs, so it "
        "removes its finalizer and the stage objects are garbage-collected; removes the operator's "
        "finalizer itself after --force-after seconds when no operator does. Uses the in-cluster config "
        "or KUBECONFIG. Exit status 1 when pipelines remain at --timeout.",
    )
    p.add_argument("--namespace", "-n", required=True, help="namespace whose VoicePipelines to delete")
    p.add_argument(
        "--selector",
        "-l",
        default="",
        help="only VoicePipelines with these labels (e.g. app.kubernetes.io/instance=vp)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    p.add_argument(
        "--force-after",
        type=float,
        default=60.0,
        help="remove the operator's finalizer after this many seconds if it is still there",
    )
    p.set_defaults(func=_cleanup)


def _cleanup(args: argparse.Namespace) -> int:
    from kubernetes import client, config

    from voice_pipeline import contract as c

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    store = KubePipelineStore(client.ApiClient(), args.selector)
    result = cleanup(store, args.namespace, f"{c.API_GROUP}/finalizer", args.timeout, args.force_after)
    print(
        f"deleted {len(result.deleted)} VoicePipeline(s) in {args.namespace}: {', '.join(result.deleted) or '-'}"
        + (f"; removed the operator's finalizer from {', '.join(result.forced)}" if result.forced else "")
    )
    if not result.ok:
        print(f"still present after {args.timeout:.0f} s: {', '.join(result.remaining)}")
        return 1
    return 0
