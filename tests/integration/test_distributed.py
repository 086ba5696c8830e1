"""Distributed mode: gateway, vad, asr, llm and tts as separate processes on loopback.

The same device conversations as in all-in-one mode, batching across sessions seen from the
stage's own /metrics, an explicit overload answer from a stage with a tiny queue, and a real
Prometheus scraping all five services.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from voice_pipeline.common.errors import OverloadedError
from voice_pipeline.common.stages import SpeechRequest, VadEvent
from voice_pipeline.simulator.device import SimulatedDevice
from voice_pipeline.transport.pool import ReplicaPool
from voice_pipeline.transport.remote import RemoteAsr, RemoteTts, RemoteVad

from .helpers import clip, transcribe, words
from .redis_server import RedisServer
from .services import Process, launch, start_prometheus, stop, wait_ready

pytestmark = pytest.mark.integration

STAGES = ("vad", "asr", "llm", "tts")


@dataclass
class Cluster:
    gateway: Process
    stages: dict[str, Process]

    @property
    def all(self) -> list[Process]:
        return [self.gateway, *self.stages.values()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("distributed")
    # The box is shared with other test runs: a cold llama.cpp server's first token can take longer
    # than the 15 s default there. Give it room; the tests assert behaviour, not speed.
    # Likewise a batcher waits a little longer for company, so that a starved event loop cannot
    # split requests that arrived together (what batching does with them is what is tested).
    extra = {
        "llm": {"VP_LLM__FIRST_TOKEN_TIMEOUT_S": "90"},
        "asr": {"VP_ASR__BATCH_MAX_WAIT_MS": "100"},
        "vad": {"VP_VAD__BATCH_MAX_WAIT_MS": "10"},
    }
    stages = {stage: launch(tmp, stage, extra.get(stage, {})) for stage in STAGES}
    try:
        wait_ready(list(stages.values()))
        urls = {f"VP_STAGES__{s.upper()}_URL": p.http for s, p in stages.items()}
        gateway = launch(tmp, "gateway", {**urls, "VP_STAGES__RESOLVE_INTERVAL_S": "2"})
        wait_ready([gateway])
    except BaseException:
        for p in stages.values():
            stop(p)
        raise
    yield Cluster(gateway, stages)
    for p in [gateway, *stages.values()]:
        stop(p)


@asynccontextmanager
async def pool(process: Process, stage: str) -> AsyncIterator[ReplicaPool]:
    replicas = ReplicaPool(stage, process.http)
    await replicas.start()
    try:
        yield replicas
    finally:
        await replicas.stop()


def batch_counts(process: Process, stage: str) -> tuple[float, float]:
    """(batches, batches of exactly one item) so far, from the service's own /metrics."""
    total = single = 0.0
    for family in text_string_to_metric_families(process.metrics()):
        if family.name != "voice_stage_batch_size":
            continue
        for sample in family.samples:
            if sample.labels.get("stage") != stage:
                continue
            if sample.name.endswith("_count"):
                total = sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "1.0":
                single = sample.value
    return total, single


# --- conversations: the same assertions as in all-in-one mode ----------------------------------


async def test_english_conversation_round_trip(cluster: Cluster) -> None:
    device = SimulatedDevice(cluster.gateway.ws)
    await device.connect()
    try:
        result = await device.turn(clip("en_hello"), timeout=120)
        assert not result.error, result.error
        assert {"hello", "joke"} & words(result.transcript)
        assert result.reply.strip()
        assert result.audio_seconds > 0.5
        heard = transcribe(np.concatenate(device.reply_audio), device.downlink_rate, "en")
        assert words(heard) & words(result.reply), (heard, result.reply)
        assert result.first_audio_ms is not None and result.stt_ms is not None
    finally:
        await device.close()


async def test_chinese_conversation_round_trip(cluster: Cluster) -> None:
    device = SimulatedDevice(cluster.gateway.ws)
    await device.connect()
    try:
        result = await device.turn(clip("zh_story"), timeout=120)
        assert not result.error, result.error
        assert {"我", "想", "故", "事"} & words(result.transcript), result.transcript
        reply = result.reply
        assert reply.strip()
        assert result.audio_seconds > 0.5
        assert any("\u4e00" <= ch <= "\u9fff" for ch in reply), reply
        characters = sum("\u4e00" <= ch <= "\u9fff" for ch in reply)
        assert characters * 0.12 < result.audio_seconds < characters * 0.6 + 1, (reply, result.audio_seconds)
    finally:
        await device.close()


async def test_barge_in_stops_audio_and_the_next_turn_works(cluster: Cluster) -> None:
    device = SimulatedDevice(cluster.gateway.ws)
    await device.connect()
    try:
        partial = await device.turn(clip("en_hello"), timeout=120, abort_after_audio_s=0.3)
        assert partial.audio_seconds >= 0.3, partial
        _, late_frames = await device.abort()
        assert late_frames <= 6  # at most the lead the pacer keeps in flight (5 frames + 1)
        result = await device.turn(clip("en_weather"), timeout=120)
        assert not result.error and result.audio_seconds > 0, result
    finally:
        await device.close()


async def test_readiness_names_the_stages_the_gateway_depends_on(cluster: Cluster) -> None:
    async with httpx.AsyncClient() as client:
        gateway = (await client.get(f"{cluster.gateway.http}/readyz")).json()
        assert gateway == {"ready": True, "dependencies": dict.fromkeys(STAGES, True)}
        for stage, process in cluster.stages.items():
            body = (await client.get(f"{process.http}/readyz")).json()
            assert body["ready"] and body["stage"] == stage
            assert (await client.get(f"{process.http}/healthz")).json()["status"] == "ok"


# --- batching across sessions ----------------------------------------------------------------


async def _vad_session(
    vad: RemoteVad, session: str, pcm: np.ndarray, barrier: asyncio.Barrier | None
) -> list[VadEvent]:
    await vad.open(session)
    events: list[VadEvent] = []
    try:
        for start in range(0, len(pcm), 960):  # 60 ms, what a device sends per frame
            if barrier is not None:
                await barrier.wait()  # every session's chunk reaches the VAD together, as with devices
            events += await vad.feed(session, pcm[start : start + 960])
    finally:
        await vad.close(session)
    return events


async def test_vad_batches_concurrent_sessions_with_unbatched_results(cluster: Cluster) -> None:
    process = cluster.stages["vad"]
    pcm = np.concatenate([clip("en_weather"), np.zeros(16000, np.int16)])
    async with pool(process, "vad") as replicas:
        vad = RemoteVad(replicas)
        alone = await _vad_session(vad, "alone", pcm, None)
        assert [e.kind for e in alone if e.kind != "speech_pause"][:2] == ["speech_start", "speech_end"]
        # The end is announced by a pause of the same silence (what early transcription keys on).
        end = next(i for i, e in enumerate(alone) if e.kind == "speech_end")
        assert alone[end - 1] == VadEvent("speech_pause", alone[end].sample), alone
        before = batch_counts(process, "vad")
        sessions = 6
        barrier = asyncio.Barrier(sessions)
        together = await asyncio.gather(*(_vad_session(vad, f"s{i}", pcm, barrier) for i in range(sessions)))
    after = batch_counts(process, "vad")
    batches, singles = after[0] - before[0], after[1] - before[1]
    assert batches > singles, f"no batch of more than one session: {batches} batches, {singles} single"
    for events in together:
        assert events == alone


async def test_asr_batches_concurrent_utterances_with_unbatched_results(cluster: Cluster) -> None:
    process = cluster.stages["asr"]
    clips = [("en_hello", "en"), ("en_weather", "en"), ("zh_hello", "zh"), ("zh_story", "zh")]
    async with pool(process, "asr") as replicas:
        asr = RemoteAsr(replicas)
        alone = [(await asr.transcribe(clip(name), language)).text for name, language in clips]  # type: ignore[arg-type]
        before = batch_counts(process, "asr")
        together = await asyncio.gather(*(asr.transcribe(clip(n), lang) for n, lang in clips))  # type: ignore[arg-type]
    after = batch_counts(process, "asr")
    assert after[0] - before[0] < len(clips), "four concurrent utterances were not batched"
    assert after[0] - before[0] > after[1] - before[1]
    assert [t.text for t in together] == alone
    assert {"hello", "joke"} & words(alone[0]) and {"weather"} & words(alone[1])


# --- overload: a tiny queue answers at once, the admitted requests still succeed ---------------


async def test_full_stage_queue_answers_overload_at_once_and_admitted_work_succeeds(tmp_path: Path) -> None:
    tiny = launch(
        tmp_path,
        "asr",
        {"VP_ASR__QUEUE_SIZE": "1", "VP_ASR__BATCH_MAX_SIZE": "1", "VP_ASR__BATCH_MAX_WAIT_MS": "0"},
    )
    try:
        wait_ready([tiny])
        pcm = clip("en_weather")
        finished: list[tuple[str, float, str]] = []

        async def one(asr: RemoteAsr) -> None:
            try:
                text = (await asr.transcribe(pcm, "en")).text
                finished.append(("ok", time.monotonic(), text))
            except OverloadedError as exc:
                finished.append(("overloaded", time.monotonic(), str(exc)))

        async with pool(tiny, "asr") as replicas:
            asr = RemoteAsr(replicas)
            await asyncio.gather(*(one(asr) for _ in range(6)))
            outcomes = [kind for kind, _, _ in finished]
            assert outcomes.count("overloaded") >= 3, finished
            assert outcomes.count("ok") >= 1, finished
            # The refusals came back before any admitted utterance finished: nobody waited in line.
            first_ok = min(t for kind, t, _ in finished if kind == "ok")
            assert all(t < first_ok for kind, t, _ in finished if kind == "overloaded"), finished
            assert all(
                "asr" in text and "overloaded" in text for kind, _, text in finished if kind == "overloaded"
            )
            assert all({"weather"} & words(text) for kind, _, text in finished if kind == "ok"), finished
            # Once the queue drains, the same replica serves again.
            assert {"weather"} & words((await asr.transcribe(pcm, "en")).text)
        assert 'voice_stage_requests_total{outcome="overload",stage="asr"}' in tiny.metrics()
    finally:
        stop(tiny)


# --- the cache in distributed mode: one Redis shared by every replica ----------------------


def cache_count(process: Process, stage: str, result: str) -> float:
    for family in text_string_to_metric_families(process.metrics()):
        if family.name == "voice_cache_requests":
            for sample in family.samples:
                if sample.labels == {"stage": stage, "result": result}:
                    return sample.value
    return 0.0


async def test_a_sentence_synthesized_by_one_replica_is_a_cache_hit_on_another(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    env = {
        "VP_CACHE__REDIS_URL": redis.url,
        # The default 80 ms Redis budget is for production; on this shared, loaded box a slow
        # answer would be bypassed (correctly) and the test would see no hit.
        "VP_CACHE__OP_TIMEOUT_MS": "3000",
        "VP_TTS__ENGINES": '{"en": ["espeak"], "zh": ["espeak"]}',
    }
    first, second = launch(tmp_path, "tts", env), launch(tmp_path, "tts", env)
    try:
        wait_ready([first, second])
        request = SpeechRequest("The cache is shared by every replica.", "en", 24000)
        audio = []
        for replica in (first, second):
            async with pool(replica, "tts") as replicas:
                audio.append(
                    [
                        p
                        for chunk in [c async for c in RemoteTts(replicas).synthesize(request)]
                        for p in chunk.packets
                    ]
                )
        assert audio[0] and audio[0] == audio[1]
        assert cache_count(first, "tts", "miss") == 1 and cache_count(first, "tts", "hit") == 0
        assert cache_count(second, "tts", "hit") == 1 and cache_count(second, "tts", "miss") == 0
    finally:
        stop(first)
        stop(second)
        redis.kill()


# --- a real Prometheus scraping all five services -------------------------------------------


async def test_prometheus_scrapes_the_contract_metrics_of_all_five_services(
    tmp_path: Path, cluster: Cluster
) -> None:
    # Some work on every stage first, so every family has samples.
    async with pool(cluster.stages["asr"], "asr") as asr_pool, pool(cluster.stages["vad"], "vad") as vad_pool:
        await RemoteAsr(asr_pool).transcribe(clip("en_hello"), "en")
        await _vad_session(RemoteVad(vad_pool), "prom", clip("en_hello"), None)
    targets = {p.name: f"{p.host}:{p.port}" for p in cluster.all}
    prometheus = start_prometheus(tmp_path, targets)
    try:
        deadline = time.monotonic() + 90
        up: dict[str, str] = {}
        while time.monotonic() < deadline:
            up = {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}
            present = {r["metric"]["stage"] for r in prometheus.query("voice_stage_requests_total")}
            if up == dict.fromkeys(targets, "1") and {"vad", "asr"} <= present:
                break
            await asyncio.sleep(1)
        assert up == dict.fromkeys(targets, "1"), up
        requests = prometheus.query('sum by (stage) (voice_stage_requests_total{outcome="ok"})')
        by_stage = {r["metric"]["stage"]: float(r["value"][1]) for r in requests}
        assert by_stage["asr"] >= 1 and by_stage["vad"] >= 1, by_stage
        # Each stage's series come from its own service (job), never from the gateway.
        jobs = {
            (r["metric"]["job"], r["metric"]["stage"])
            for r in prometheus.query("voice_stage_batch_size_count")
        }
        assert {("asr", "asr"), ("vad", "vad")} <= jobs, jobs
        concurrency = prometheus.query("voice_stage_max_concurrency")
        assert {("llm", "llm"), ("tts", "tts")} <= {
            (r["metric"]["job"], r["metric"]["stage"]) for r in concurrency
        }
        for family in (
            "voice_stage_latency_seconds_count",
            "voice_stage_queue_wait_seconds_count",
            "voice_stage_busy_seconds_total",
        ):
            assert {r["metric"]["stage"] for r in prometheus.query(family)} >= {"vad", "asr"}, family
        # Device metrics come from the gateway alone (the stage services do not export them).
        assert [r["metric"]["job"] for r in prometheus.query("voice_gateway_sessions")] == ["gateway"]
        first_audio = prometheus.query("voice_e2e_first_audio_seconds_count")
        assert [r["metric"]["job"] for r in first_audio] == ["gateway"]
    finally:
        prometheus.process.terminate()
        prometheus.process.wait(10)
