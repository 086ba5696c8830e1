"""Cloud provider clients against local servers speaking each provider's real wire protocol.

Anthropic Messages SSE, Azure TTS REST, iFlytek TTS WebSocket (signed URL verified), OpenAI
/audio/speech (raw PCM streamed) and /audio/transcriptions (multipart WAV): the happy path, the
outage and error cases, and that no key ever shows up in an error or a log line.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from voice_pipeline.asr.engine import AsrItem
from voice_pipeline.asr.openai_remote import OpenAITranscriptionEngine
from voice_pipeline.common.breaker import Breaker
from voice_pipeline.common.errors import ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import ChatMessage, SpeechRequest
from voice_pipeline.llm.anthropic_client import AnthropicProvider
from voice_pipeline.llm.openai_client import LlmStreamError
from voice_pipeline.llm.router import LlmRouter, ProviderState
from voice_pipeline.tts.azure import AzureEngine
from voice_pipeline.tts.engine import PcmChunk, TtsEngine
from voice_pipeline.tts.iflytek import IflytekEngine, signed_url
from voice_pipeline.tts.openai_speech import OpenAISpeechEngine
from voice_pipeline.tts.settings import TtsSettings
from voice_pipeline.tts.stage import InProcessTts

from .provider_servers import (
    IFLYTEK_APP,
    IFLYTEK_KEY,
    IFLYTEK_SECRET,
    SECRET,
    Control,
    anthropic_app,
    azure_app,
    iflytek_server,
    openai_audio_app,
    refused_url,
    serve,
    silent_server,
    verify_iflytek,
)

pytestmark = pytest.mark.integration
SECRETS = (SECRET, IFLYTEK_KEY, IFLYTEK_SECRET)
HISTORY = [
    ChatMessage("system", "Be brief."),
    ChatMessage("assistant", "Hi there."),  # a window may start with the assistant: must be dropped
    ChatMessage("user", "Hello"),
    ChatMessage("user", "again"),  # consecutive user turns: must be merged
]


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


async def _chat(provider: AnthropicProvider) -> list[str]:
    await provider.start()
    try:
        return [t async for t in provider.stream_chat(HISTORY)]
    finally:
        await provider.close()


async def _speak(engine: TtsEngine, text: str = "Hello world", language: str = "en") -> list[PcmChunk]:
    await engine.start()
    try:
        return [c async for c in engine.synthesize(text, language)]
    finally:
        await engine.close()


# --- Anthropic Messages ---------------------------------------------------------------------------


async def test_anthropic_streams_text_deltas(caplog: pytest.LogCaptureFixture) -> None:
    control = Control()
    async with serve(anthropic_app(control)) as base:
        reply = await _chat(AnthropicProvider("claude", f"{base}/v1", "claude-test", SECRET))
    assert "".join(reply) == "Hello from Claude."
    body = control.requests[0]
    assert body["system"] == "Be brief." and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "Hello\nagain"}]
    assert_no_secret(caplog.text)


@pytest.mark.parametrize(
    ("key", "mode", "match"),
    [
        ("wrong-key", "ok", "HTTP 401.*authentication_error"),
        (SECRET, "overloaded", "HTTP 529.*overloaded_error"),
    ],
)
async def test_anthropic_errors_before_first_token_are_unavailable(
    key: str, mode: str, match: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(anthropic_app(Control(mode))) as base:
        with pytest.raises(ProviderUnavailableError, match=match) as info:
            await _chat(AnthropicProvider("claude", f"{base}/v1", "m", key))
    assert_no_secret(str(info.value), caplog.text)


async def test_anthropic_error_event_mid_stream_ends_the_reply() -> None:
    async with serve(anthropic_app(Control("error_mid"))) as base:
        provider = AnthropicProvider("claude", f"{base}/v1", "m", SECRET)
        await provider.start()
        got = []
        with pytest.raises(LlmStreamError, match="overloaded_error"):
            async for token in provider.stream_chat(HISTORY):
                got.append(token)
        await provider.close()
    assert got == ["Hello"]


async def test_anthropic_connection_refused_and_silence() -> None:
    with pytest.raises(ProviderUnavailableError, match="ConnectError"):
        await _chat(AnthropicProvider("claude", f"{refused_url()}/v1", "m", SECRET))
    async with silent_server() as base:
        with pytest.raises(ProviderUnavailableError, match="timed out"):
            await _chat(AnthropicProvider("claude", f"{base}/v1", "m", SECRET, first_token_timeout_s=0.3))


async def test_router_fails_over_from_anthropic_outage_to_a_live_anthropic() -> None:
    metrics = Metrics()
    async with serve(anthropic_app(Control("overloaded"))) as down, serve(anthropic_app(Control())) as up:
        states = [
            ProviderState(AnthropicProvider("down", f"{down}/v1", "m", SECRET), breaker=Breaker(2, 30)),
            ProviderState(AnthropicProvider("up", f"{up}/v1", "m", SECRET), breaker=Breaker(2, 30)),
        ]
        router = LlmRouter(states, metrics)
        await router.start()
        reply = "".join([t async for t in router.stream_chat(HISTORY)])
        await router.close()
    assert reply == "Hello from Claude."
    assert (
        metrics.registry.get_sample_value(
            "voice_provider_requests_total", {"stage": "llm", "provider": "down", "outcome": "error"}
        )
        == 1
    )


# --- Azure TTS ------------------------------------------------------------------------------------


async def test_azure_streams_pcm_for_ssml(caplog: pytest.LogCaptureFixture) -> None:
    control = Control()
    voices = {"en": "en-US-AriaNeural", "zh": "zh-CN-XiaoxiaoNeural"}
    async with serve(azure_app(control)) as base:
        chunks = await _speak(AzureEngine(f"{base}/cognitiveservices/v1", voices, SECRET), "Fish & <chips>")
        zh = await _speak(AzureEngine(f"{base}/cognitiveservices/v1", voices, SECRET), "你好", "zh")
    pcm = np.concatenate([c.pcm for c in chunks])
    assert all(c.sample_rate == 24000 for c in chunks) and len(chunks) > 1
    assert len(pcm) == int(0.05 * len("Fish & <chips>") * 24000)  # every sample, none split
    assert np.abs(pcm).max() > 1000
    assert control.requests[0] == {"voice": "en-US-AriaNeural", "text": "Fish & <chips>", "lang": "en-US"}
    assert control.requests[1]["voice"] == "zh-CN-XiaoxiaoNeural" and len(zh) >= 1
    assert_no_secret(caplog.text)


async def test_azure_wrong_key_throttling_and_outage(caplog: pytest.LogCaptureFixture) -> None:
    voices = {"en": "en-US-AriaNeural"}
    async with serve(azure_app(Control())) as base:
        with pytest.raises(ProviderUnavailableError, match="HTTP 401") as info:
            await _speak(AzureEngine(f"{base}/cognitiveservices/v1", voices, "wrong-" + SECRET[:4]))
    async with serve(azure_app(Control("throttled"))) as base:
        with pytest.raises(ProviderUnavailableError, match="HTTP 429") as info2:
            await _speak(AzureEngine(f"{base}/cognitiveservices/v1", voices, SECRET))
    with pytest.raises(ProviderUnavailableError, match="ConnectError") as info3:
        await _speak(AzureEngine(f"{refused_url()}/cognitiveservices/v1", voices, SECRET))
    assert_no_secret(str(info.value), str(info2.value), str(info3.value), caplog.text)


# --- iFlytek TTS ----------------------------------------------------------------------------------


def test_iflytek_signature_matches_the_documented_algorithm() -> None:
    # The server-side check recomputes HMAC-SHA256 over host, date and request line.
    url = signed_url("ws://127.0.0.1:1234/v2/tts", IFLYTEK_KEY, IFLYTEK_SECRET)
    path_qs = url.split("127.0.0.1:1234", 1)[1]
    assert verify_iflytek(path_qs, "127.0.0.1:1234") is None
    forged = signed_url("ws://127.0.0.1:1234/v2/tts", IFLYTEK_KEY, "another-secret").split("1234", 1)[1]
    assert verify_iflytek(forged, "127.0.0.1:1234") == "signature mismatch"
    stale = signed_url(
        "ws://127.0.0.1:1234/v2/tts", IFLYTEK_KEY, IFLYTEK_SECRET, "Mon, 01 Jan 2024 00:00:00 GMT"
    )
    assert verify_iflytek(stale.split("1234", 1)[1], "127.0.0.1:1234") == "date skew"


async def test_iflytek_streams_audio_frames(caplog: pytest.LogCaptureFixture) -> None:
    control = Control()
    async with iflytek_server(control) as url:
        engine = IflytekEngine(IFLYTEK_APP, IFLYTEK_KEY, IFLYTEK_SECRET, {"zh": "xiaoyan"}, url)
        chunks = await _speak(engine, "你好，今天天气不错", "zh")
    assert control.requests[0]["text"] == "你好，今天天气不错"
    assert (
        control.requests[0]["business"]["aue"] == "raw"
        and control.requests[0]["business"]["vcn"] == "xiaoyan"
    )
    pcm = np.concatenate([c.pcm for c in chunks])
    assert len(chunks) > 1 and chunks[0].sample_rate == 16000
    assert len(pcm) == int(0.05 * 9 * 16000)  # every frame up to status 2
    assert_no_secret(caplog.text)


@pytest.mark.parametrize(
    ("secret", "app", "mode", "match"),
    [
        ("wrong-secret", IFLYTEK_APP, "ok", "handshake refused: HTTP 401"),
        (IFLYTEK_SECRET, "other-app", "ok", "error 10313: invalid appid"),
        (IFLYTEK_SECRET, IFLYTEK_APP, "licence", "error 11200: licc fail"),
        (IFLYTEK_SECRET, IFLYTEK_APP, "drop", "closed before the last frame"),
    ],
)
async def test_iflytek_errors(
    secret: str, app: str, mode: str, match: str, caplog: pytest.LogCaptureFixture
) -> None:
    control = Control(mode)
    async with iflytek_server(control) as url:
        engine = IflytekEngine(app, IFLYTEK_KEY, secret, {"zh": "xiaoyan"}, url)
        with pytest.raises(ProviderUnavailableError, match=match) as info:
            await _speak(engine, "你好你好", "zh")
    if secret != IFLYTEK_SECRET:
        assert control.requests == [{"rejected": "signature mismatch"}]
    assert_no_secret(str(info.value), caplog.text)
    assert "authorization=" not in caplog.text and "authorization=" not in str(info.value)


async def test_iflytek_unreachable() -> None:
    url = refused_url().replace("http", "ws") + "/v2/tts"
    engine = IflytekEngine(IFLYTEK_APP, IFLYTEK_KEY, IFLYTEK_SECRET, {"zh": "xiaoyan"}, url)
    with pytest.raises(ProviderUnavailableError) as info:
        await _speak(engine, "你好", "zh")
    assert_no_secret(str(info.value))


# --- OpenAI /audio/speech -------------------------------------------------------------------------


async def test_openai_speech_streams_raw_pcm(caplog: pytest.LogCaptureFixture) -> None:
    control = Control()
    async with serve(openai_audio_app(control)) as base:
        engine = OpenAISpeechEngine(f"{base}/v1", "tts-1", {"en": "nova", "zh": "alloy"}, SECRET)
        chunks = await _speak(engine, "Hello there")
    assert control.requests[0] == {
        "model": "tts-1",
        "input": "Hello there",
        "voice": "nova",
        "response_format": "pcm",
    }
    pcm = np.concatenate([c.pcm for c in chunks])
    assert chunks[0].sample_rate == 24000 and len(chunks) > 1
    assert len(pcm) == int(0.04 * len("Hello there") * 24000)
    assert_no_secret(caplog.text)


async def test_openai_speech_errors(caplog: pytest.LogCaptureFixture) -> None:
    async with serve(openai_audio_app(Control("unavailable"))) as base:
        with pytest.raises(ProviderUnavailableError, match="HTTP 503") as info:
            await _speak(OpenAISpeechEngine(f"{base}/v1", "tts-1", {"en": "nova"}, SECRET))
        with pytest.raises(ProviderUnavailableError, match="HTTP 401") as info2:
            await _speak(OpenAISpeechEngine(f"{base}/v1", "tts-1", {"en": "nova"}, "sk-wrong"))
    async with silent_server() as base:
        with pytest.raises(ProviderUnavailableError, match="timed out"):
            await _speak(OpenAISpeechEngine(f"{base}/v1", "tts-1", {"en": "nova"}, SECRET, timeout_s=0.3))
    assert_no_secret(str(info.value), str(info2.value), caplog.text)


async def test_tts_stage_fails_over_from_azure_outage_to_openai_speech() -> None:
    """Through the real TtsRouter with breakers and Opus framing: Azure refused -> OpenAI speech."""
    settings = TtsSettings(engines={"en": ["azure", "openai"]}, breaker_failures=1, breaker_cooldown_s=60)
    metrics = Metrics()
    async with serve(openai_audio_app(Control())) as base:
        engines: dict[str, TtsEngine] = {
            "azure": AzureEngine(f"{refused_url()}/cognitiveservices/v1", {"en": "en-US-AriaNeural"}, SECRET),
            "openai": OpenAISpeechEngine(f"{base}/v1", "tts-1", {"en": "nova"}, SECRET),
        }
        async with InProcessTts(settings, metrics, engines) as tts:
            for _ in range(2):
                audio = [a async for a in tts.synthesize(SpeechRequest("Hello there.", "en", 16000))]
                assert sum(a.seconds for a in audio) > 0.3
    sample = metrics.registry.get_sample_value
    assert (
        sample("voice_provider_requests_total", {"stage": "tts", "provider": "azure", "outcome": "error"})
        == 1
    )
    assert (
        sample("voice_provider_requests_total", {"stage": "tts", "provider": "openai", "outcome": "ok"}) == 2
    )


# --- OpenAI /audio/transcriptions ---------------------------------------------------------------


def _item(seconds: float, language: str) -> AsrItem:
    return AsrItem(np.zeros(int(seconds * 16000), np.float32), language)


async def test_openai_transcriptions_multipart_batch(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    control = Control()
    async with serve(openai_audio_app(control)) as base:
        engine = OpenAITranscriptionEngine(f"{base}/v1", "whisper-1", SECRET)
        out = await asyncio.to_thread(
            engine.transcribe_batch, [_item(1.5, "en"), _item(0.5, "zh"), _item(2.0, "auto")]
        )
        engine.close()
    assert [t.text for t in out] == ["heard 1.5 seconds", "你好，世界", "heard 2.0 seconds"]
    assert [t.language for t in out] == ["en", "zh", "en"]
    assert out[0].audio_seconds == 1.5
    seen = sorted(control.requests, key=lambda r: r["language"])
    assert all(r["rate"] == 16000 and r["channels"] == 1 and r["width"] == 2 for r in seen)
    assert all(r["model"] == "whisper-1" and r["filename"] == "audio.wav" for r in seen)
    assert [r["language"] for r in seen] == ["", "en", "zh"]  # auto sends no language
    assert_no_secret(caplog.text)


async def test_openai_transcriptions_errors(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    async with serve(openai_audio_app(Control("unavailable"))) as base:
        engine = OpenAITranscriptionEngine(f"{base}/v1", "whisper-1", SECRET)
        with pytest.raises(ProviderUnavailableError, match="HTTP 503") as info:
            await asyncio.to_thread(engine.transcribe_batch, [_item(1, "en")])
        engine.close()
    engine = OpenAITranscriptionEngine(f"{refused_url()}/v1", "whisper-1", SECRET)
    with pytest.raises(ProviderUnavailableError, match="ConnectError") as info2:
        await asyncio.to_thread(engine.transcribe_batch, [_item(1, "en"), _item(1, "en")])
    engine.close()
    assert_no_secret(str(info.value), str(info2.value), caplog.text)


async def test_asr_stage_with_the_remote_backend_batches_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ASR stage as the gateway uses it (micro-batcher included), remote back end selected by settings."""
    import asyncio

    from voice_pipeline.asr.settings import AsrSettings
    from voice_pipeline.asr.stage import InProcessAsr

    monkeypatch.setenv("REMOTE_ASR_KEY", SECRET)
    control = Control()
    metrics = Metrics()
    async with serve(openai_audio_app(control)) as base:
        settings = AsrSettings(
            backend="openai",
            openai_base_url=f"{base}/v1",
            openai_key_env="REMOTE_ASR_KEY",
            batch_max_wait_ms=50,
        )
        async with InProcessAsr(settings, metrics) as asr:
            pcm = np.zeros(16000, np.int16)
            results = await asyncio.gather(*(asr.transcribe(pcm, "en") for _ in range(4)))
    assert [r.text for r in results] == ["heard 1.0 seconds"] * 4
    assert len(control.requests) == 4
    batches = metrics.registry.get_sample_value("voice_stage_batch_size_count", {"stage": "asr"})
    assert batches is not None and batches < 4  # the sessions shared batches
