"""spec.stages.llm.providers reach the llm Deployment: router settings as env, keys as Secret files."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from voice_operator.capacity import make_plan
from voice_operator.manifests import Owner, desired_objects
from voice_operator.profiles import load_profile
from voice_operator.providers import ENV_LLM_PROVIDERS
from voice_operator.reconcile import reconcile
from voice_operator.spec import parse_spec
from voice_pipeline.common.settings import unknown_env_keys
from voice_pipeline.stagehost.settings import LlmServiceSettings

OWNER = Owner("office", "voice", "uid-1")
PROVIDERS: list[dict[str, Any]] = [
    {"name": "qwen", "baseUrl": "https://dashscope.aliyuncs.com/compatible-mode/v1", "model": "qwen-turbo",
     "apiKeySecret": {"name": "dashscope"}, "weight": 2, "maxConcurrency": 8},
    {"name": "claude", "type": "anthropic", "model": "claude-3-5-haiku-latest",
     "apiKeySecret": {"name": "anthropic", "key": "token"}},
    {"name": "local-vllm", "baseUrl": "http://vllm.voice:8000/v1", "model": "qwen2.5-7b"},
]  # fmt: skip


def _spec(providers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"devices": 20, "nodeSize": "4c16g", "stages": {"llm": {"providers": providers}}}


def _deployments(providers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    spec = parse_spec(_spec(providers))
    objects = desired_objects(OWNER, make_plan(spec, load_profile()), providers=spec.stages.llm.providers)
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_llm_deployment_gets_the_providers_and_mounts_each_key_secret() -> None:
    llm = _deployments(PROVIDERS)["office-llm"]
    container = _container(llm)
    env = {e["name"]: e for e in container["env"]}
    providers = json.loads(env[ENV_LLM_PROVIDERS]["value"])
    assert [p["name"] for p in providers] == ["qwen", "claude", "local-vllm"]
    assert providers[0]["weight"] == 2 and providers[0]["max_concurrency"] == 8
    assert providers[1]["type"] == "anthropic" and "api_key_file" not in providers[2]

    # Every stage Pod has a /tmp scratch volume; the rest are the providers' key Secrets.
    volumes = {v["name"]: v for v in llm["spec"]["template"]["spec"]["volumes"] if v["name"] != "tmp"}
    mounts = {
        m["mountPath"]: m for m in container["volumeMounts"] if m["mountPath"] != "/tmp"
    }  # /tmp: scratch
    assert all(m["readOnly"] for m in mounts.values())
    expected_secret = {"qwen": ("dashscope", "apiKey"), "claude": ("anthropic", "token")}
    for provider in providers[:2]:
        directory, file = provider["api_key_file"].rsplit("/", 1)
        secret = volumes[mounts[directory]["name"]]["secret"]
        assert (secret["secretName"], secret["items"][0]["key"]) == expected_secret[provider["name"]]
        assert secret["items"][0]["path"] == file
    assert len(volumes) == 2


def test_the_llm_service_accepts_the_providers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    container = _container(_deployments(PROVIDERS)["office-llm"])
    value = next(e["value"] for e in container["env"] if e["name"] == ENV_LLM_PROVIDERS)
    assert unknown_env_keys(LlmServiceSettings, {ENV_LLM_PROVIDERS: value}) == []
    monkeypatch.setenv(ENV_LLM_PROVIDERS, value)
    settings = LlmServiceSettings().llm  # what `voice-pipeline serve llm` in the Deployment reads
    assert [(p.name, p.type, p.weight) for p in settings.providers] == [
        ("qwen", "openai", 2.0),
        ("claude", "anthropic", 1.0),
        ("local-vllm", "openai", 1.0),
    ]
    assert settings.providers[0].api_key_file.startswith("/var/run/secrets/voice-pipeline/")
    assert not settings.needs_local_server()


def test_no_providers_no_extra_env_and_other_stages_untouched() -> None:
    without = _deployments([])
    with_providers = _deployments(PROVIDERS)
    assert ENV_LLM_PROVIDERS not in {e["name"] for e in _container(without["office-llm"])["env"]}
    assert [v["name"] for v in without["office-llm"]["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    for name in ("office-gateway", "office-vad", "office-asr", "office-tts"):
        assert with_providers[name] == without[name]


class _Api:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = copy.deepcopy(obj)
        return obj

    def pdb_api_version(self) -> str:
        return "policy/v1"


def test_reconcile_passes_the_spec_providers_to_the_llm_deployment() -> None:
    api = _Api()
    body = {
        "metadata": {"name": "office", "namespace": "voice", "uid": "uid-1", "generation": 1},
        "spec": _spec(PROVIDERS[:1]),
        "status": {},
    }
    reconcile(body, api, load_profile(), lambda: "2026-11-24T00:00:00Z")  # type: ignore[arg-type]
    llm = api.objects[("Deployment", "office-llm")]
    env = {e["name"] for e in _container(llm)["env"]}
    assert ENV_LLM_PROVIDERS in env
    assert llm["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"] == "dashscope"
