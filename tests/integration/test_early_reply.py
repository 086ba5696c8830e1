"""The early reply on the real all-in-one server (Silero, Whisper, the local llama.cpp model):
a spoken question that ends in its first pause is answered by the request begun at that pause."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from voice_pipeline import contract as c

from .conftest import Server, start_server, stop_server
from .helpers import one_turn, words

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def early(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("early-reply"),
        {"VP_GATEWAY__EARLY_REPLY": "true"},
    )
    yield server
    stop_server(server)


async def _counts(server: Server) -> dict[tuple[str, str], float]:
    async with httpx.AsyncClient(base_url=server.http) as client:
        text = (await client.get("/metrics")).text
    return {
        (s.name, s.labels.get(c.LABEL_RESULT, "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("voice_gateway_early_reply", "voice_gateway_early_asr"))
    }


async def test_a_question_that_ends_at_its_pause_is_answered_by_the_early_request(early: Server) -> None:
    result = await one_turn(early.url, "en_weather", timeout=120)
    assert not result.error, result.error
    # Not the exact text: whisper-base's reading of this espeak clip depends on the Opus encoder's
    # settings (docs/benchmarks.md, "The device's Opus uplink"); the early reply is what is tested.
    assert {"what", "like"} <= words(result.transcript), result.transcript
    assert result.reply.strip() and result.audio_seconds > 0
    counts = await _counts(early)
    # The turn ended in the pause its transcript was begun at, and its reply was that request's.
    assert counts.get((c.METRIC_EARLY_ASR, "used"), 0) >= 1, counts
    assert counts.get((c.METRIC_EARLY_REPLY, "used"), 0) >= 1, counts
    log = early.log_path.read_text(errors="replace")
    assert "Traceback" not in log
