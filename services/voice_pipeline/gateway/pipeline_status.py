"""The VoicePipeline this gateway belongs to, for the status page: its plan and its conditions.

Under the operator, the gateway Pod runs as a ServiceAccount allowed to `get` its own VoicePipeline
and nothing else (manifests.gateway_rbac), and the operator names the resource in its settings
(`VP_GATEWAY__PIPELINE__NAME`, `..._NAMESPACE`). The gateway reads it with one plain GET, using
the Pod's service-account token and CA like any in-cluster client; no Kubernetes client library:
one read-only call does not need one. Anywhere else (all-in-one, `make run`) the page says there
is no operator instead of showing an error.

Decisions are pure (`view`: what the API answered -> what the page shows); `KubePipelineSource`
is the thin I/O. The token is read from its file on each call (the kubelet rotates bound tokens)
and goes only into the Authorization header: never into a message, a log line or the JSON.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field

from voice_pipeline import contract as c

log = logging.getLogger(__name__)

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONDITION_ORDER = ("Ready", "Progressing", "Degraded", "CapacitySufficient")
STAGE_FIELDS = ("replicas", "engine", "cpu", "cpuRequest", "memory", "batchSize", "maxWaitMs",
                "maxConcurrency", "queueSize", "devices", "utilization")  # fmt: skip


class PipelineStatusSettings(BaseModel):
    """Where the gateway finds its VoicePipeline (env `VP_GATEWAY__PIPELINE__<KEY>`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "", description="The VoicePipeline this gateway serves; empty = no operator (the page says so)."
    )
    namespace: str = Field("", description="Its namespace; empty = the service account's namespace file.")
    api_url: str = Field(
        "",
        description="Kubernetes API URL; empty = in-cluster (https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT).",
    )
    token_file: str = Field(f"{SA_DIR}/token", description="Service-account token, re-read on every call.")
    ca_file: str = Field(
        f"{SA_DIR}/ca.crt", description="CA bundle the API server's certificate is checked against."
    )
    refresh_s: float = Field(
        5.0, gt=0, description="The answer is reused this long (the page polls every 2 s)."
    )
    timeout_s: float = Field(3.0, gt=0, description="Timeout of one call to the API.")


# --- what the API answered ---------------------------------------------------------------------
Outcome = Literal["ok", "unconfigured", "no-cluster", "http-error", "unreachable"]


@dataclass(frozen=True)
class Fetched:
    outcome: Outcome
    name: str = ""
    namespace: str = ""
    obj: Mapping[str, Any] | None = None  # the VoicePipeline, when outcome == "ok"
    http_status: int = 0
    detail: str = ""  # the API's own message, or why no call was made; never holds the token


class PipelineSource(Protocol):
    async def fetch(self) -> Fetched: ...


# --- PURE: what the page shows -----------------------------------------------------------------
def _condition_rank(condition: Mapping[str, Any]) -> tuple[int, str]:
    kind = str(condition.get("type", ""))
    return (CONDITION_ORDER.index(kind) if kind in CONDITION_ORDER else len(CONDITION_ORDER), kind)


def _stages(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    stages = plan.get("stages") or {}
    order = [s for s in c.STAGES if s in stages] + sorted(s for s in stages if s not in c.STAGES)
    return [{"stage": s, **{k: stages[s].get(k) for k in STAGE_FIELDS}} for s in order]


def _error_message(f: Fetched) -> str:
    what = f"VoicePipeline {f.namespace}/{f.name}"
    api = f": {f.detail}" if f.detail else ""
    if f.outcome == "unreachable":
        return f"Cannot reach the Kubernetes API to read {what}{api}"
    if f.http_status == 401:
        return f"The Kubernetes API refused the gateway's service-account token (401 Unauthorized){api}"
    if f.http_status == 403:
        return (
            f"The gateway's ServiceAccount may not read {what} (403 Forbidden): it needs `get` on "
            f"voicepipelines, which the operator's gateway Role grants{api}"
        )
    if f.http_status == 404:
        return f"{what} was not found (404): deleted, or the gateway was given the wrong name{api}"
    return f"The Kubernetes API answered HTTP {f.http_status} for {what}{api}"


def view(f: Fetched) -> dict[str, Any]:
    """The `pipeline` part of /api/status: state `ok` (plan and conditions), `none` (no operator:
    not configured or not in a cluster) or `error` (with a message a person can act on)."""
    base: dict[str, Any] = {"name": f.name, "namespace": f.namespace, "stages": [], "conditions": []}
    if f.outcome in ("unconfigured", "no-cluster"):
        return {**base, "state": "none", "message": f"No operator: {f.detail}"}
    if f.outcome != "ok" or f.obj is None:
        return {**base, "state": "error", "message": _error_message(f)}
    spec = f.obj.get("spec") or {}
    status = f.obj.get("status") or {}
    plan = status.get("plan") or {}
    generation = (f.obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    conditions = sorted(
        (
            {k: cond.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
            for cond in status.get("conditions") or []
        ),
        key=_condition_rank,
    )
    if not plan:
        message = "The operator has not planned this VoicePipeline yet."
    elif observed != generation:
        message = (
            f"The spec changed (generation {generation}); the operator last planned generation {observed}."
        )
    else:
        message = ""
    return {
        **base,
        "state": "ok",
        "message": message,
        "devices": spec.get("devices"),
        "nodeSize": plan.get("nodeSize") or spec.get("nodeSize"),
        "supportedDevices": plan.get("supportedDevices", status.get("supportedDevices")),
        "fits": plan.get("fits"),
        "bottleneck": plan.get("bottleneck") or status.get("bottleneck"),
        "recommendation": plan.get("recommendation") or status.get("recommendation") or "",
        "budget": plan.get("budget"),
        "used": plan.get("used"),
        "generation": generation,
        "observedGeneration": observed,
        "stages": _stages(plan),
        "conditions": conditions,
    }


# --- I/O -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where to ask, or why not to (`missing`)."""

    name: str
    namespace: str
    api_url: str
    missing: str = ""


def resolve(
    settings: PipelineStatusSettings, env: Mapping[str, str], read: Callable[[str], str | None]
) -> Target:
    """PURE given `read` (a file's text or None): the call to make, from settings, env and the
    service-account files; `missing` says why there is none."""
    namespace = settings.namespace or (read(f"{SA_DIR}/namespace") or "").strip()
    api_url = settings.api_url
    if not api_url and env.get("KUBERNETES_SERVICE_HOST"):
        host = env["KUBERNETES_SERVICE_HOST"]
        host = f"[{host}]" if ":" in host else host  # an IPv6 service address
        api_url = f"https://{host}:{env.get('KUBERNETES_SERVICE_PORT', '443')}"
    if not settings.name:
        missing = "this gateway was not started by the voice-pipeline operator (VP_GATEWAY__PIPELINE__NAME is unset)."
    elif not api_url:
        missing = "not running in a Kubernetes cluster (no KUBERNETES_SERVICE_HOST, no VP_GATEWAY__PIPELINE__API_URL)."
    elif not namespace:
        missing = (
            "no namespace given (VP_GATEWAY__PIPELINE__NAMESPACE) and no service-account namespace file."
        )
    else:
        missing = ""
    return Target(settings.name, namespace, api_url.rstrip("/"), missing)


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


class KubePipelineSource:
    """GET /apis/voice.pipeline.dev/v1alpha1/namespaces/<ns>/voicepipelines/<name> with the Pod's
    service-account token. A client per call: at most one call per `refresh_s`, and only while a
    status page is open, so there is no connection worth keeping (nor a lifespan hook to close it)."""

    def __init__(self, settings: PipelineStatusSettings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.target = resolve(settings, os.environ if env is None else env, _read_text)

    def _credentials(self) -> tuple[str, ssl.SSLContext | bool]:
        """The token (stripped; "" when absent) and the TLS check: the Pod's CA when mounted,
        else the system's (an API server behind a public certificate)."""
        token = (_read_text(self.settings.token_file) or "").strip()
        ca = self.settings.ca_file
        return token, ssl.create_default_context(cafile=ca) if Path(ca).is_file() else True

    async def fetch(self) -> Fetched:
        t = self.target
        if t.missing:
            outcome: Outcome = "unconfigured" if not t.name else "no-cluster"
            return Fetched(outcome, t.name, t.namespace, detail=t.missing)
        try:
            token, verify = await asyncio.to_thread(self._credentials)
        except (ssl.SSLError, OSError) as e:  # an unreadable or malformed CA bundle
            return Fetched(
                "unreachable", t.name, t.namespace, detail=f"CA bundle {self.settings.ca_file}: {e}"[:300]
            )
        if not token:
            return Fetched(
                "no-cluster", t.name, t.namespace,
                detail=f"no service-account token at {self.settings.token_file} (automountServiceAccountToken off?).",
            )  # fmt: skip
        url = f"{t.api_url}/apis/{c.API_GROUP}/{c.API_VERSION}/namespaces/{t.namespace}/{c.PLURAL}/{t.name}"
        try:
            async with httpx.AsyncClient(verify=verify, timeout=self.settings.timeout_s) as client:
                answer = await client.get(
                    url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
                )
        except (httpx.HTTPError, OSError) as e:
            # httpx's messages name the URL and the socket error, never the request's headers.
            return Fetched(
                "unreachable", t.name, t.namespace, detail=f"{t.api_url}: {type(e).__name__}: {e}"[:300]
            )
        if answer.status_code != 200:
            return Fetched(
                "http-error", t.name, t.namespace, http_status=answer.status_code, detail=_api_message(answer)
            )
        try:
            obj = answer.json()
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            detail = "the answer was not a JSON object"
            return Fetched("http-error", t.name, t.namespace, http_status=502, detail=detail)
        return Fetched("ok", t.name, t.namespace, obj=obj)


def _api_message(answer: httpx.Response) -> str:
    """The apiserver's Status message ("... cannot get resource ..."); it names the user, not the token."""
    try:
        body = answer.json()
    except ValueError:
        return ""
    return str(body.get("message", ""))[:300] if isinstance(body, dict) else ""


class PipelineStatus:
    """The last view, refreshed at most every `refresh_s` (one call at a time however many pages
    poll). State changes are logged once, not on every poll."""

    def __init__(
        self, source: PipelineSource, refresh_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.clock = clock
        self._last: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def current(self) -> dict[str, Any]:
        async with self._lock:
            if self._last is not None and self.clock() - self._last[0] < self.refresh_s:
                return self._last[1]
            shown = view(await self.source.fetch())
            before = self._last[1] if self._last else None
            if before is None or (before["state"], before["message"]) != (shown["state"], shown["message"]):
                level = logging.WARNING if shown["state"] == "error" else logging.INFO
                where = f"{shown['namespace']}/{shown['name']}" if shown["name"] else "-"
                log.log(level, "status page: VoicePipeline %s: %s", where, shown["message"] or "read")
            self._last = (self.clock(), shown)
            return shown
