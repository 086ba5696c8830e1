"""The all-in-one server configured for cloud providers only, each a local server speaking the
provider's real protocol: remote ASR (OpenAI transcriptions), an LLM router whose first provider is
down and whose second is Anthropic Messages, and TTS whose Azure is down and whose OpenAI speech
answers. A device turn must come back whole through the failovers, and no key may reach the log.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from .conftest import start_server, stop_server
from .helpers import one_turn
from .provider_servers import SECRET, Control, anthropic_app, openai_audio_app, refused_url, serve

pytestmark = pytest.mark.integration


def _sample(metrics: str, name: str, **labels: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_turn_through_cloud_providers_with_failover(tmp_path: Path) -> None:
    asr_llm_tts = Control(), Control(), Control()
    async with (
        serve(openai_audio_app(asr_llm_tts[0])) as audio_api,
        serve(anthropic_app(asr_llm_tts[1])) as claude,
    ):
        down = refused_url()
        env = {
            "PROVIDER_TEST_KEY": SECRET,
            "VP_ASR__BACKEND": "openai",
            "VP_ASR__OPENAI_BASE_URL": f"{audio_api}/v1",
            "VP_ASR__OPENAI_KEY_ENV": "PROVIDER_TEST_KEY",
            "VP_LLM__PROVIDERS": json.dumps(
                [
                    {"name": "deepseek-down", "base_url": f"{down}/v1", "api_key_env": "PROVIDER_TEST_KEY"},
                    {
                        "name": "claude",
                        "type": "anthropic",
                        "base_url": f"{claude}/v1",
                        "model": "claude-test",
                        "api_key_env": "PROVIDER_TEST_KEY",
                    },
                ]
            ),
            "VP_TTS__ENGINES": json.dumps({"en": ["azure", "openai", "espeak"], "zh": ["azure", "espeak"]}),
            "VP_TTS__EDGE_ENABLED": "false",
            "VP_TTS__AZURE_ENDPOINT": f"{down}/cognitiveservices/v1",
            "VP_TTS__AZURE_KEY_ENV": "PROVIDER_TEST_KEY",
            "VP_TTS__OPENAI_BASE_URL": f"{audio_api}/v1",
            "VP_TTS__OPENAI_KEY_ENV": "PROVIDER_TEST_KEY",
            "VP_GATEWAY__LANGUAGE": "en",
        }
        # Started from a thread: this event loop keeps serving the provider stand-ins meanwhile.
        server = await asyncio.to_thread(start_server, tmp_path, env)
        try:
            result = await one_turn(server.url, "en_hello")
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"{server.http}/metrics")).text
        finally:
            await asyncio.to_thread(stop_server, server)
    log = server.log_path.read_text(errors="replace")

    assert not result.error, (result.error, server.log_tail())
    uploads = [r for r in asr_llm_tts[0].requests if "filename" in r]
    assert uploads and uploads[0]["rate"] == 16000 and uploads[0]["language"] == "en"
    assert result.transcript.startswith("heard ")  # the remote ASR's answer
    assert result.reply == "Hello from Claude."  # failed over from the refused provider
    assert asr_llm_tts[1].requests[-1]["messages"][-1] == {"role": "user", "content": result.transcript}
    assert result.audio_seconds > 0.3  # spoken by the OpenAI-compatible speech server
    assert any(r.get("input") for r in asr_llm_tts[0].requests)
    assert (
        _sample(
            metrics, "voice_provider_requests_total", stage="llm", provider="deepseek-down", outcome="error"
        )
        >= 1
    )
    assert (
        _sample(metrics, "voice_provider_requests_total", stage="llm", provider="claude", outcome="ok") >= 1
    )
    assert (
        _sample(metrics, "voice_provider_requests_total", stage="tts", provider="azure", outcome="error") >= 1
    )
    assert (
        _sample(metrics, "voice_provider_requests_total", stage="tts", provider="openai", outcome="ok") >= 1
    )
    assert SECRET not in log and SECRET not in metrics
