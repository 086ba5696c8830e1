"""Plan -> the Kubernetes objects a VoicePipeline owns. PURE: dicts in, dicts out.

Per stage: a Deployment running `voice-pipeline serve <stage>`, a Service, a PodDisruptionBudget;
plus one ConfigMap holding every stage's operator-chosen settings (batch size, max wait,
concurrency, queue size, Redis, stage URLs), and the gateway's ServiceAccount with a Role that may
only `get` this VoicePipeline (its status page shows the plan and conditions). Pods carry a hash
of their stage's settings so a changed setting rolls them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voice_operator.capacity import Plan, StagePlan
from voice_operator.providers import llm_provider_pod_parts
from voice_operator.quantity import format_cpu, format_memory
from voice_operator.spec import ProviderSpec, StageAuth
from voice_pipeline import contract as c

FIELD_MANAGER = "voice-pipeline-operator"
GATEWAY_PORT = 8000
STAGE_PORT = 9000
DEFAULT_IMAGE = "ghcr.io/voice-pipeline/services:0.1.0"
# The services image's user (docker/Dockerfile.services: USER 10001).
IMAGE_UID = 10001
# The "restricted" Pod Security Standard: non-root, no privilege escalation, no capabilities, the
# runtime's default seccomp profile (tests/unit/test_pod_security.py checks every Pod we build).
RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": IMAGE_UID,
    "runAsGroup": IMAGE_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
# Where the stage services' shared secret is mounted in every stage Pod.
STAGE_AUTH_DIR = "/var/run/voice-pipeline/stage-auth"
# The setting each stage's server binds with (a local `serve` binds loopback by default).
BIND_ENV: dict[str, str] = {
    stage: "VP_GATEWAY__HOST" if stage == "gateway" else "VP_SERVICE__HOST" for stage in c.STAGES
}


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{c.API_GROUP}/{c.API_VERSION}",
            "kind": c.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def object_name(owner: Owner, stage: str) -> str:
    return f"{owner.name}-{stage}"


def labels(owner: Owner, stage: str | None = None) -> dict[str, str]:
    out = {c.LABEL_APP: c.APP_NAME, c.LABEL_INSTANCE: owner.name, c.LABEL_MANAGED_BY: FIELD_MANAGER}
    if stage:
        out[c.LABEL_COMPONENT] = stage
    return out


def selector(owner: Owner, stage: str) -> dict[str, str]:
    return {c.LABEL_INSTANCE: owner.name, c.LABEL_COMPONENT: stage}


def _meta(owner: Owner, name: str, stage: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, stage),
        "ownerReferences": [owner.reference()],
    }


def port_of(stage: str) -> int:
    return GATEWAY_PORT if stage == "gateway" else STAGE_PORT


def stage_settings(owner: Owner, stage: str, plan: StagePlan, redis_url: str) -> dict[str, str]:
    """The env each stage's Deployment gets: only keys its settings class has (it refuses others)."""
    sizing = {
        c.KEY_BATCH_SIZE: str(plan.batch_size),
        c.KEY_BATCH_WAIT_MS: str(plan.max_wait_ms),
        c.KEY_MAX_CONCURRENCY: str(plan.max_concurrency),
        c.KEY_QUEUE_SIZE: str(plan.queue_size),
    }
    settings = {c.env_name(stage, key): sizing[key] for key in c.SIZING_KEYS[stage]}
    settings.update(engine_settings(stage, plan))
    if stage in c.CACHED_STAGES and redis_url:
        settings[c.ENV_REDIS_URL] = redis_url
    if stage == "gateway":
        for other in c.MODEL_STAGES:
            settings[c.env_stage_url(other)] = f"http://{object_name(owner, other)}:{STAGE_PORT}"
        settings[c.ENV_GATEWAY_PIPELINE_NAME] = owner.name
        settings[c.ENV_GATEWAY_PIPELINE_NAMESPACE] = owner.namespace
    return settings


def engine_settings(stage: str, plan: StagePlan) -> dict[str, str]:
    """The engine the plan was sized for, as the stage's own setting (so the Pod runs what was costed)."""
    if stage == "asr":
        # The Pod's memory limit was costed for one copy of the model (calibrate loads one), so the
        # second copy that speeds up calls running alone on a dedicated machine stays off.
        settings = {c.env_name("asr", c.KEY_ASR_SOLO_THREADS): "0"}
        if plan.engine:
            settings[c.env_name("asr", c.KEY_ASR_BACKEND)] = plan.engine
        return settings
    if stage == "tts" and plan.engine:
        # The chosen engine first for every language, espeak-ng (local) when it fails or lacks a voice.
        order = list(dict.fromkeys([plan.engine, c.TTS_FALLBACK_ENGINE]))
        return {c.env_name("tts", c.KEY_TTS_ENGINES): json.dumps(dict.fromkeys(c.TTS_LANGUAGES, order))}
    if stage == "llm" and plan.engine == c.LLM_LOCAL_ENGINE:
        # The llama.cpp server's threads are the CPU the plan gave the replica.
        threads = max(1, int(plan.cpu_limit))
        return {c.env_name("llm", c.KEY_LLM_LOCAL_THREADS): str(threads)}
    return {}


def config_map(owner: Owner, plan: Plan, redis_url: str) -> dict[str, Any]:
    data = {
        f"{stage}.{key}": value
        for stage, stage_plan in plan.stages.items()
        for key, value in stage_settings(owner, stage, stage_plan, redis_url).items()
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(owner, f"{owner.name}-settings", None),
        "data": data,
    }


def stage_auth_pod_parts(
    stage: str, auth: StageAuth | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, volumes, mounts) that give a stage Pod the stage services' shared secret as a file:
    the stages check it on /v1/stream, the gateway presents it (VP_SERVICE__/VP_STAGES__AUTH_TOKEN_FILE)."""
    if auth is None or not auth.secret_name:
        return [], [], []
    env_name = c.ENV_STAGES_AUTH_TOKEN_FILE if stage == "gateway" else c.ENV_SERVICE_AUTH_TOKEN_FILE
    volume = {
        "name": "stage-auth",
        "secret": {"secretName": auth.secret_name, "items": [{"key": auth.key, "path": "token"}]},
    }
    mount = {"name": "stage-auth", "mountPath": STAGE_AUTH_DIR, "readOnly": True}
    return [{"name": env_name, "value": f"{STAGE_AUTH_DIR}/token"}], [volume], [mount]


def deployment(
    owner: Owner,
    stage: str,
    plan: StagePlan,
    image: str,
    redis_url: str,
    providers: Sequence[ProviderSpec] = (),
    stage_auth: StageAuth | None = None,
) -> dict[str, Any]:
    settings = stage_settings(owner, stage, plan, redis_url)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    env = [
        {
            "name": key,
            "valueFrom": {"configMapKeyRef": {"name": f"{owner.name}-settings", "key": f"{stage}.{key}"}},
        }
        for key in sorted(settings)
    ]
    port = port_of(stage)
    resources = {
        "requests": {"cpu": format_cpu(plan.cpu_request), "memory": format_memory(plan.memory_mib)},
        "limits": {"cpu": format_cpu(plan.cpu_limit), "memory": format_memory(plan.memory_mib)},
    }
    container = {
        "name": stage,
        "image": image,
        "command": ["voice-pipeline", "serve", stage],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        # Every address, not the loopback default of a local `serve`: the Service routes here.
        "env": [{"name": BIND_ENV[stage], "value": "0.0.0.0"}, *env],
        "resources": resources,
        # Model loading can take a minute on a busy node: liveness starts only once this passed.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": RESTRICTED_CONTAINER,
        # The root filesystem is read-only: /tmp (HOME and VP_HOME in the image) is the scratch space.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    # The llm router's providers: their settings as env, their API keys as mounted Secret files.
    provider_env, provider_volumes, provider_mounts = llm_provider_pod_parts(
        providers if stage == "llm" else ()
    )
    auth_env, auth_volumes, auth_mounts = stage_auth_pod_parts(stage, stage_auth)
    extra_env, volumes, mounts = (
        provider_env + auth_env,
        provider_volumes + auth_volumes,
        provider_mounts + auth_mounts,
    )
    if extra_env:
        container["env"] = [*container["env"], *extra_env]
    if mounts:
        container["volumeMounts"] = [*container["volumeMounts"], *mounts]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, object_name(owner, stage), stage),
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": selector(owner, stage)},
            "template": {
                "metadata": {
                    "labels": labels(owner, stage),
                    "annotations": {
                        "voice.pipeline.dev/settings-hash": digest,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "containers": [container],
                    "securityContext": RESTRICTED_POD,
                    # No <SERVICE>_SERVICE_HOST variables: with a release named "vp" they would be
                    # VP_* names, which every settings class refuses as unknown keys.
                    "enableServiceLinks": False,
                    # Only the gateway calls the Kubernetes API (a read of its own VoicePipeline),
                    # as its own ServiceAccount; the model stages get no token at all.
                    **(
                        {
                            "serviceAccountName": gateway_service_account(owner),
                            "automountServiceAccountToken": True,
                        }
                        if stage == "gateway"
                        else {"automountServiceAccountToken": False}
                    ),
                    "terminationGracePeriodSeconds": 30,
                    "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes],
                },
            },
        },
    }


def gateway_service_account(owner: Owner) -> str:
    return object_name(owner, "gateway")


def gateway_rbac(owner: Owner) -> list[dict[str, Any]]:
    """The gateway's identity: a ServiceAccount, a Role allowing `get` on this one VoicePipeline
    (resourceNames: not its siblings, not list/watch, not status writes) and their binding. The
    operator may grant it because it holds that permission itself (RBAC forbids escalation)."""
    name = gateway_service_account(owner)
    subject = {"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}
    rules = [
        {"apiGroups": [c.API_GROUP], "resources": [c.PLURAL], "resourceNames": [owner.name], "verbs": ["get"]}
    ]
    rbac = "rbac.authorization.k8s.io"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(owner, name, "gateway")},
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "Role",
            "metadata": _meta(owner, name, "gateway"),
            "rules": rules,
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": _meta(owner, name, "gateway"),
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": name},
            "subjects": [subject],
        },
    ]


def service(owner: Owner, stage: str) -> dict[str, Any]:
    port = port_of(stage)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **_meta(owner, object_name(owner, stage), stage),
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)},
        },
        "spec": {
            # Stage Services are headless: their name resolves to every ready pod, so the gateway
            # keeps a connection per replica and spreads sessions (a virtual IP would pin them).
            **({} if stage == "gateway" else {"clusterIP": "None"}),
            "selector": selector(owner, stage),
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def pod_disruption_budget(owner: Owner, stage: str, plan: StagePlan, api_version: str) -> dict[str, Any]:
    # One replica may always be drained; with a single replica that still allows a node drain.
    return {
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": _meta(owner, object_name(owner, stage), stage),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(owner, stage)}},
    }


def desired_objects(
    owner: Owner,
    plan: Plan,
    image: str = "",
    redis_url: str = "",
    pdb_api_version: str = "policy/v1",
    providers: Sequence[ProviderSpec] = (),
    stage_auth: StageAuth | None = None,
) -> list[dict[str, Any]]:
    image = image or DEFAULT_IMAGE
    # The gateway's ServiceAccount first: its Pods cannot be created before it exists.
    objects: list[dict[str, Any]] = [config_map(owner, plan, redis_url), *gateway_rbac(owner)]
    for stage in c.STAGES:
        stage_plan = plan.stages[stage]
        objects += [
            deployment(owner, stage, stage_plan, image, redis_url, providers, stage_auth),
            service(owner, stage),
            pod_disruption_budget(owner, stage, stage_plan, pdb_api_version),
        ]
    return objects


def is_subset(desired: Any, actual: Any) -> bool:
    """True when every field we set has the value we want (the server may add its defaults)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            k in actual and is_subset(v, actual[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
        )
    return bool(desired == actual)
