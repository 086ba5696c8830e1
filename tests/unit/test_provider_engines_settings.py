"""Settings -> cloud engines: the TTS engines per language, the remote ASR back end, clear errors."""

from __future__ import annotations

import pytest

from voice_pipeline.asr.openai_remote import OpenAITranscriptionEngine, detected_language
from voice_pipeline.asr.settings import AsrSettings
from voice_pipeline.asr.stage import build_engine
from voice_pipeline.common.errors import ConfigError
from voice_pipeline.tts.azure import AzureEngine, ssml
from voice_pipeline.tts.iflytek import IflytekEngine
from voice_pipeline.tts.openai_speech import OpenAISpeechEngine
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.tts.stage import build_engines


def test_cloud_tts_engines_are_built_only_when_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AZ_KEY", "az-secret")
    (tmp_path / "secret").write_text("ifly-secret\n")
    monkeypatch.setenv("IFLY_KEY", "ifly-key")
    settings = TtsSettings(
        engines={"zh": ["iflytek", "azure"], "en": ["openai", "azure"]},
        edge_enabled=False,
        azure_region="eastasia",
        azure_key_env="AZ_KEY",
        iflytek_app_id="app",
        iflytek_api_key_env="IFLY_KEY",
        iflytek_api_secret_file=str(tmp_path / "secret"),
        openai_base_url="http://127.0.0.1:9/v1",
    )
    engines = build_engines(settings)
    assert sorted(engines) == ["azure", "iflytek", "openai"]
    azure = engines["azure"]
    assert isinstance(azure, AzureEngine)
    assert azure.endpoint == "https://eastasia.tts.speech.microsoft.com/cognitiveservices/v1"
    assert isinstance(engines["iflytek"], IflytekEngine) and engines["iflytek"].languages == {"zh"}
    assert isinstance(engines["openai"], OpenAISpeechEngine)
    for engine in engines.values():
        assert "secret" not in repr(engine) and "ifly-key" not in repr(engine)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"engines": {"en": ["azure"]}, "azure_key_env": "AZ_KEY"}, "azure_region"),
        ({"engines": {"en": ["azure"]}, "azure_region": "westus"}, "needs a key"),
        ({"engines": {"zh": ["iflytek"]}, "iflytek_app_id": "a"}, "iFlytek TTS needs"),
        ({"engines": {"en": ["openai"]}, "openai_key_env": "UNSET_KEY_VAR"}, "UNSET_KEY_VAR"),
    ],
)
def test_missing_credentials_are_one_clear_error(
    overrides: dict[str, object], match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZ_KEY", "k")
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match=match):
        build_engines(TtsSettings(edge_enabled=False, **overrides))  # type: ignore[arg-type]


def test_ssml_escapes_text_and_names_the_voice_locale() -> None:
    doc = ssml('Fish & "chips" <now>', "zh-CN-XiaoxiaoNeural")
    assert 'Fish &amp; "chips" &lt;now&gt;' in doc
    assert 'xml:lang="zh-CN"' in doc and 'name="zh-CN-XiaoxiaoNeural"' in doc


def test_remote_asr_backend_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_KEY", "asr-secret")
    engine = build_engine(
        AsrSettings(backend="openai", openai_base_url="http://127.0.0.1:9/v1", openai_key_env="ASR_KEY")
    )
    assert isinstance(engine, OpenAITranscriptionEngine)
    assert "asr-secret" not in repr(engine)
    engine.close()


def test_remote_asr_language_of_auto_requests() -> None:
    assert detected_language("今天天气怎么样", "auto", ["zh", "en"]) == "zh"
    assert detected_language("what is the weather", "auto", ["zh", "en"]) == "en"
    assert detected_language("what is the weather", "zh", ["zh", "en"]) == "zh"  # forced stays
    assert detected_language("hello", "auto", ["zh"]) == "zh"  # only allowed languages


def test_openai_speech_sample_rate_is_configurable() -> None:
    default = build_engines(TtsSettings(engines={"en": ["openai"]}, edge_enabled=False))["openai"]
    other = build_engines(
        TtsSettings(engines={"en": ["openai"]}, edge_enabled=False, openai_sample_rate=22050)
    )
    assert isinstance(default, OpenAISpeechEngine) and default.sample_rate == 24000
    assert other["openai"].sample_rate == 22050  # type: ignore[attr-defined]


def test_anthropic_body_folds_history_and_clamps_temperature() -> None:
    from voice_pipeline.common.stages import ChatMessage
    from voice_pipeline.llm.anthropic_client import AnthropicProvider

    provider = AnthropicProvider("claude", "http://x/v1", "m", temperature=1.5)
    body = provider.request_body(
        [ChatMessage("system", "S"), ChatMessage("assistant", "a0"), ChatMessage("user", "u1"),
         ChatMessage("assistant", "a1"), ChatMessage("assistant", "a2"), ChatMessage("user", "u2")]
    )  # fmt: skip
    assert body["temperature"] == 1.0 and body["system"] == "S" and body["stream"] is True
    assert body["messages"] == [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1\na2"},
        {"role": "user", "content": "u2"},
    ]
