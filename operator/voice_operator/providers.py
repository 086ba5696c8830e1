"""spec.stages.llm.providers -> the llm Deployment's router settings and mounted API keys. PURE.

The llm stage reads its provider list from `VP_LLM__PROVIDERS` (JSON, the shape of
`voice_pipeline.llm.settings.ProviderSettings`). Keys never travel in that JSON or in any env
value: each provider's Secret is mounted read-only as a file and the JSON names the file
(`api_key_file`), which the service reads at start-up and never logs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from voice_operator.spec import ProviderSpec

ENV_LLM_PROVIDERS = "VP_LLM__PROVIDERS"
SECRETS_DIR = "/var/run/secrets/voice-pipeline"
KEY_FILE = "api-key"


def _volume_name(index: int) -> str:
    return f"llm-provider-key-{index}"  # provider names need not be valid volume names


def key_dir(index: int) -> str:
    return f"{SECRETS_DIR}/{_volume_name(index)}"


def provider_settings(providers: Sequence[ProviderSpec]) -> list[dict[str, Any]]:
    out = []
    for index, p in enumerate(providers):
        entry: dict[str, Any] = {
            "name": p.name,
            "type": p.type,
            "base_url": p.base_url,
            "model": p.model,
            "weight": p.weight,
            "max_concurrency": p.max_concurrency,
        }
        if p.api_key_secret is not None:
            entry["api_key_file"] = f"{key_dir(index)}/{KEY_FILE}"
        out.append(entry)
    return out


def llm_provider_pod_parts(
    providers: Sequence[ProviderSpec],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(env entries, volumes, volume mounts) for the llm container; all empty without providers."""
    if not providers:
        return [], [], []
    env = [{"name": ENV_LLM_PROVIDERS, "value": json.dumps(provider_settings(providers), sort_keys=True)}]
    volumes, mounts = [], []
    for index, p in enumerate(providers):
        if p.api_key_secret is None:
            continue
        volumes.append(
            {
                "name": _volume_name(index),
                "secret": {
                    "secretName": p.api_key_secret.name,
                    "items": [{"key": p.api_key_secret.key, "path": KEY_FILE}],
                },
            }
        )
        mounts.append({"name": _volume_name(index), "mountPath": key_dir(index), "readOnly": True})
    return env, volumes, mounts
