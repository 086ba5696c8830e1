"""Stage services share one real Redis: what one replica computed, another serves from the cache.

Two `voice-pipeline serve asr` replicas and a `serve tts` process, configured the way the operator
configures them (VP_CACHE__REDIS_URL), called through the gateway's own transport clients. Each
process's /metrics tells who ran the model and who hit the cache.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client.parser import text_string_to_metric_families

from voice_pipeline.common.stages import SpeechRequest
from voice_pipeline.transport.pool import ReplicaPool
from voice_pipeline.transport.remote import RemoteAsr, RemoteTts

from .helpers import clip, words
from .redis_server import RedisServer
from .services import Process, launch, stop, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Process]]:
    tmp = tmp_path_factory.mktemp("service-caches")
    redis = RedisServer(tmp)
    redis.start()
    env = {"VP_CACHE__REDIS_URL": redis.url, "VP_CACHE__OP_TIMEOUT_MS": "1000"}
    tts_env = {
        **env,
        "VP_TTS__ENGINES": '{"en": ["espeak"], "zh": ["espeak"]}',
        "VP_TTS__EDGE_ENABLED": "false",
    }
    processes = {
        "asr-a": launch(tmp, "asr", env),
        "asr-b": launch(tmp, "asr", env),
        "tts": launch(tmp, "tts", tts_env),
    }
    try:
        wait_ready(list(processes.values()))
        yield processes
    finally:
        for process in processes.values():
            stop(process)
        redis.stop()


def sample(process: Process, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(process.metrics()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def cache(process: Process, stage: str, result: str) -> float:
    return sample(process, "voice_cache_requests_total", {"stage": stage, "result": result})


def model_calls(process: Process, stage: str) -> float:
    return sample(process, "voice_stage_requests_total", {"stage": stage, "outcome": "ok"})


@asynccontextmanager
async def pool(process: Process, stage: str) -> AsyncIterator[ReplicaPool]:
    replicas = ReplicaPool(stage, process.http)
    await replicas.start()
    try:
        yield replicas
    finally:
        await replicas.stop()


async def test_an_utterance_transcribed_by_one_replica_is_a_hit_on_another(
    services: dict[str, Process],
) -> None:
    a, b = services["asr-a"], services["asr-b"]
    audio = clip("zh_hello")
    async with pool(a, "asr") as pool_a, pool(b, "asr") as pool_b:
        first = await RemoteAsr(pool_a).transcribe(audio, "auto")
        second = await RemoteAsr(pool_b).transcribe(audio, "auto")
    assert second == first and {"你", "好"} & words(first.text)
    assert (model_calls(a, "asr"), cache(a, "asr", "miss")) == (1, 1)
    assert (model_calls(b, "asr"), cache(b, "asr", "hit")) == (0, 1)  # b never ran its model


async def test_a_repeated_sentence_is_a_hit_in_the_tts_service(services: dict[str, Process]) -> None:
    tts = services["tts"]
    request = SpeechRequest("This sentence is synthesized once.", "en", 24000, 60)
    async with pool(tts, "tts") as replicas:
        first = [p async for chunk in RemoteTts(replicas).synthesize(request) for p in chunk.packets]
        again = [p async for chunk in RemoteTts(replicas).synthesize(request) for p in chunk.packets]
    assert first and again == first
    assert model_calls(tts, "tts") == 1 and cache(tts, "tts", "hit") == 1


def test_services_say_where_their_cache_is(services: dict[str, Process]) -> None:
    for process in services.values():
        assert "caches on (redis redis://127.0.0.1:" in process.log_path.read_text(errors="replace")
