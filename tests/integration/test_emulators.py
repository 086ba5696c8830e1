"""Provider emulators as real processes, driven by the project's own provider clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from voice_pipeline.bench.rig import Proc, start_llm_emulator, start_tts_emulator, stop
from voice_pipeline.common.stages import ChatMessage
from voice_pipeline.emulators.profiles import LlmProfile, TtsProfile
from voice_pipeline.llm.openai_client import OpenAICompatibleProvider
from voice_pipeline.tts.openai_speech import OpenAISpeechEngine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    logs = tmp_path_factory.mktemp("emulators")
    llm = start_llm_emulator(logs, LlmProfile(ttft_ms=300, tokens_per_s=40))
    try:
        tts = start_tts_emulator(logs, TtsProfile(first_audio_ms=200))
    except BaseException:
        stop(llm)
        raise
    yield llm, tts
    stop(llm)
    stop(tts)


async def test_llm_emulator_streams_a_reply_in_the_language_of_the_question(
    emulators: tuple[Proc, Proc],
) -> None:
    llm, _ = emulators
    provider = OpenAICompatibleProvider("emulator", f"{llm.http}/v1", "emulator", max_tokens=96)
    try:
        for question, chinese in (("What is the weather like today?", False), ("我想听一个故事。", True)):
            sent = time.monotonic()
            deltas, times = [], []
            async for delta in provider.stream_chat(
                [ChatMessage("system", "be brief"), ChatMessage("user", question)]
            ):
                deltas.append(delta)
                times.append(time.monotonic() - sent)
            reply = "".join(deltas)
            assert len(deltas) > 5, deltas
            assert any("\u4e00" <= ch <= "\u9fff" for ch in reply) == chinese, reply
            # The profile is a floor the emulator never undercuts (a busy machine only adds).
            assert times[0] >= 0.3
            assert times[-1] - times[0] >= (len(deltas) - 1) / 40 - 0.01
    finally:
        await provider.close()


async def test_llm_emulator_refuses_bad_requests_with_openai_errors(emulators: tuple[Proc, Proc]) -> None:
    llm, _ = emulators
    async with httpx.AsyncClient(base_url=llm.http) as client:
        for body in (
            b"{not json",
            b'{"messages": []}',
            b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
        ):
            response = await client.post("/v1/chat/completions", content=body)
            assert response.status_code == 400
            assert response.json()["error"]["type"] == "invalid_request_error"
        # A good request right after still works.
        ok = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        )
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]


async def test_tts_emulator_streams_pcm_through_the_openai_speech_engine(
    emulators: tuple[Proc, Proc],
) -> None:
    _, tts = emulators
    engine = OpenAISpeechEngine(f"{tts.http}/v1", "tts-1", {"en": "alloy", "zh": "alloy"})
    await engine.start()
    try:
        sent = time.monotonic()
        chunks, first = [], None
        async for chunk in engine.synthesize("Hello there, this is a short sentence.", "en"):
            first = first if first is not None else time.monotonic() - sent
            chunks.append(chunk)
        elapsed = time.monotonic() - sent
    finally:
        await engine.close()
    pcm = np.concatenate([c.pcm for c in chunks])
    seconds = len(pcm) / chunks[0].sample_rate
    assert chunks[0].sample_rate == 24000
    assert seconds == pytest.approx(38 / 14, rel=0.05)  # as long as the text takes to say
    assert first is not None and first >= 0.2
    assert elapsed < seconds  # faster than real time
    assert np.abs(pcm).max() > 1000  # audible, not silence


async def test_tts_emulator_refuses_bad_requests(emulators: tuple[Proc, Proc]) -> None:
    _, tts = emulators
    async with httpx.AsyncClient(base_url=tts.http) as client:
        for body in (
            {"input": "", "response_format": "pcm"},
            {"input": "hi", "response_format": "mp3"},
            {"input": "hi", "response_format": "pcm", "speed": 9},
        ):
            response = await client.post("/v1/audio/speech", json=body)
            assert response.status_code == 400, body
            assert response.json()["error"]["message"]


def test_emulator_logs_are_kept(emulators: tuple[Proc, Proc]) -> None:
    for proc in emulators:
        assert Path(proc.log_path).exists() and "emulator on http://" in proc.log_tail()
