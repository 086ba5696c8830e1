"""The operator and the stage services agree on setting names: every env var the operator puts on
a stage's Deployment is accepted by that stage's settings class and lands in the right field."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest

from voice_operator.capacity import Plan, make_plan
from voice_operator.manifests import Owner, desired_objects, stage_settings
from voice_operator.profiles import StageCost, load_profile
from voice_operator.spec import parse_spec
from voice_pipeline import contract as c
from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.common.errors import ConfigError
from voice_pipeline.common.settings import build_settings as load_service_settings
from voice_pipeline.common.settings import unknown_env_keys
from voice_pipeline.gateway.service import GatewayServiceSettings
from voice_pipeline.stagehost.settings import (
    AsrServiceSettings,
    LlmServiceSettings,
    TtsServiceSettings,
    VadServiceSettings,
)
from voice_pipeline.tts.settings import TtsSettings

OWNER = Owner("office", "voice", "uid-1")
CLOUD = [{"name": "cloud", "baseUrl": "https://llm.example/v1"}]
PLAN = make_plan(
    parse_spec({"devices": 60, "nodeSize": "4c16g", "stages": {"llm": {"providers": CLOUD}}}), load_profile()
)


def _with_every_engine() -> Any:
    """The shipped profile plus a cost for each engine it lacks (copied, only to size a plan)."""
    profile = load_profile()
    for stage, engines in c.ENGINES.items():
        for engine in engines:
            profile.stages.setdefault(
                f"{stage}:{engine}", StageCost(**{**profile.stages[stage].model_dump(), "engines": [engine]})
            )
    profile.stages.setdefault(
        "llm:llamacpp", StageCost(**{**profile.stages["llm"].model_dump(), "engines": ["llamacpp"]})
    )
    return profile


EVERY_ENGINE = _with_every_engine()


def engine_plan(asr: str, tts: str, llm: str) -> Plan:
    stages = {
        "asr": {"engine": asr},
        "tts": {"engine": tts},
        "llm": {"providers": CLOUD if llm == "cloud" else []},
    }
    return make_plan(parse_spec({"devices": 20, "nodeSize": "4c16g", "stages": stages}), EVERY_ENGINE)


SETTINGS = {
    "gateway": GatewayServiceSettings,
    "vad": VadServiceSettings,
    "asr": AsrServiceSettings,
    "llm": LlmServiceSettings,
    "tts": TtsServiceSettings,
}


@pytest.mark.parametrize("stage", c.STAGES)
def test_every_env_var_the_operator_sets_is_a_known_setting(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = stage_settings(OWNER, stage, PLAN.stages[stage], "redis://redis:6379/0")
    assert unknown_env_keys(SETTINGS[stage], env) == []
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_service_settings(SETTINGS[stage])
    plan = PLAN.stages[stage]
    if stage in ("vad", "asr"):
        section = getattr(settings, stage)
        assert section.batch_max_size == plan.batch_size
        assert section.batch_max_wait_ms == plan.max_wait_ms
    if stage in ("llm", "tts"):
        assert getattr(settings, stage).max_concurrency == plan.max_concurrency
    if stage in c.CACHED_STAGES:
        assert settings.cache.redis_url == "redis://redis:6379/0"
    if stage == "gateway":
        assert settings.stages.urls() == {s: f"http://office-{s}:9000" for s in c.MODEL_STAGES}


def test_deployments_carry_exactly_those_env_vars() -> None:
    for obj in desired_objects(OWNER, PLAN, redis_url="redis://redis:6379/0"):
        if obj["kind"] != "Deployment":
            continue
        stage = obj["metadata"]["labels"][c.LABEL_COMPONENT]
        container = obj["spec"]["template"]["spec"]["containers"][0]
        names = {e["name"] for e in container["env"]}
        assert unknown_env_keys(SETTINGS[stage], dict.fromkeys(names, "")) == [], stage
        assert container["command"] == ["voice-pipeline", "serve", stage]


def test_a_misspelt_service_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VP_ASR__BATCH_MAX_SIZ", "4")
    with pytest.raises(ConfigError, match="VP_ASR__BATCH_MAX_SIZ"):
        load_service_settings(AsrServiceSettings)
    monkeypatch.delenv("VP_ASR__BATCH_MAX_SIZ")
    monkeypatch.setenv("VP_LLM__BASE_URL", "http://x/v1")  # the LLM service's setting, not the gateway's
    with pytest.raises(ConfigError, match="VP_LLM__BASE_URL"):
        load_service_settings(GatewayServiceSettings)


def test_the_distributed_gateway_needs_every_stage_url() -> None:
    with pytest.raises(ConfigError, match="VP_STAGES__TTS_URL"):
        GatewayServiceSettings(
            stages={"vad_url": "http://v", "asr_url": "http://a", "llm_url": "http://l"}
        ).stages.urls()


def test_the_contract_engines_are_the_services_engines() -> None:
    assert get_args(AsrSettings.model_fields["backend"].annotation) == c.ASR_ENGINES
    assert c.ASR_ENGINES[0] == AsrSettings().backend  # the default the plan assumes is the service's
    assert TtsSettings().engines["en"][0] == c.TTS_ENGINES[0]
    with pytest.raises(ValueError, match="unknown TTS engine"):
        TtsSettings(engines={"en": ["edgy"]})


@pytest.mark.parametrize(
    ("asr", "tts", "llm"),
    [
        ("sensevoice", "edge", "local"),
        ("whisper", "piper", "cloud"),
        ("openai", "espeak", "local"),
        ("whisper", "azure", "cloud"),
    ],
)
def test_the_chosen_engines_reach_the_stage_settings(
    asr: str, tts: str, llm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = engine_plan(asr, tts, llm)
    loaded = {}
    for stage in c.STAGES:
        env = stage_settings(OWNER, stage, plan.stages[stage], "redis://redis:6379/0")
        assert unknown_env_keys(SETTINGS[stage], env) == [], stage
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            loaded[stage] = load_service_settings(SETTINGS[stage])
    assert loaded["asr"].asr.backend == asr  # type: ignore[attr-defined]
    engines = loaded["tts"].tts.engines  # type: ignore[attr-defined]
    assert set(engines) == set(c.TTS_LANGUAGES) and all(order[0] == tts for order in engines.values())
    assert all(order[-1] == "espeak" for order in engines.values())  # the local fallback
    llm_settings = loaded["llm"].llm  # type: ignore[attr-defined]
    if llm == "local":
        assert llm_settings.local_threads == int(plan.stages["llm"].cpu_limit) == 2
        assert llm_settings.max_concurrency == plan.stages["llm"].max_concurrency
    env = stage_settings(OWNER, "tts", plan.stages["tts"], "")
    assert json.loads(env["VP_TTS__ENGINES"])["zh"][0] == tts
