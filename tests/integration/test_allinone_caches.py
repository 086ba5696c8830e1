"""The all-in-one server's in-process caches, seen from a device: a repeated question is served
from the caches (ASR, LLM and TTS hits on /metrics) and sounds the same."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from voice_pipeline.simulator.device import SimulatedDevice

from .conftest import Server
from .helpers import clip

pytestmark = pytest.mark.integration


def cache_counts(server: Server) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{server.http}/metrics", timeout=10).text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "voice_cache_requests_total":
                counts[(sample.labels["stage"], sample.labels["result"])] = sample.value
    return counts


async def test_a_repeated_question_is_answered_from_the_caches(allinone: Server) -> None:
    results = []
    for _ in range(2):
        device = SimulatedDevice(allinone.url)
        await device.connect()
        try:
            before = cache_counts(allinone)
            results.append(await device.turn(clip("en_weather"), timeout=90))
            after = cache_counts(allinone)
        finally:
            await device.close()
    first, second = results
    assert not first.error and not second.error, (first.error, second.error)
    assert first.reply.strip() and second.reply == first.reply
    assert second.transcript == first.transcript
    assert second.audio_seconds == pytest.approx(first.audio_seconds, abs=0.07)

    # The second turn (a new session, so a first-turn question) hit every cache. ASR may run more
    # than once a turn (early runs at quiet gaps inside the sentence, gateway.early_quiet_ms): the
    # same audio each time, so every one of them is a hit.
    def delta(stage: str, result: str) -> float:
        return after.get((stage, result), 0.0) - before.get((stage, result), 0.0)

    assert delta("asr", "hit") >= 1 and delta("asr", "miss") == 0 and delta("llm", "hit") == 1
    assert delta("tts", "hit") >= 1 and delta("tts", "miss") == 0
