"""A device's own language: read from what it sends, carried to ASR as the fallback of `auto`."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import (
    Language,
    Transcript,
    asr_language_tag,
    parse_asr_language_tag,
    spoken_language,
)
from voice_pipeline.gateway.auth import AuthSettings, extract_identity
from voice_pipeline.gateway.conversation import Conversation, Stages
from voice_pipeline.gateway.ota import OtaSettings, build_ota_response, with_device_language
from voice_pipeline.gateway.settings import GatewaySettings
from voice_pipeline.turn.history import ChatHistory

from .test_conversation import FakeAsr, FakeLlm, FakeTts, FakeVad, Out, speak, wait_reply


@pytest.mark.parametrize(
    ("tag", "language"),
    [
        ("zh-CN", "zh"),
        ("zh_TW", "zh"),
        ("en-US,en;q=0.9", "en"),
        ("EN", "en"),
        ("ja-JP,zh;q=0.8", ""),  # the first one named decides
        ("", ""),
        ("zhx", ""),
    ],
)
def test_a_language_tag_names_zh_en_or_nothing(tag: str, language: str) -> None:
    assert spoken_language(tag) == language


def test_an_asr_language_tag_round_trips_and_rejects_the_rest() -> None:
    assert asr_language_tag("auto", "zh") == "auto/zh"
    assert asr_language_tag("en", "zh") == "en"  # a forced language needs no fallback
    assert asr_language_tag("auto", "") == "auto"
    for language, fallback in (("auto", "zh"), ("auto", ""), ("en", "")):
        assert parse_asr_language_tag(asr_language_tag(language, fallback)) == (language, fallback)  # type: ignore[arg-type]
    for bad in ("auto/fr", "zh/en", "de", "auto/ ", "/zh"):
        with pytest.raises(ValueError, match="language must be"):
            parse_asr_language_tag(bad)


def test_the_session_reads_the_language_from_the_query_then_accept_language() -> None:
    assert extract_identity({"Accept-Language": "zh-CN,zh;q=0.9"}, {}).language == "zh"
    assert extract_identity({"Accept-Language": "zh-CN"}, {"language": "en"}).language == "en"
    assert extract_identity({"Accept-Language": "fr-FR"}, {}).language == ""


def test_the_ota_answer_puts_the_firmwares_language_into_the_websocket_url() -> None:
    url = "ws://10.0.0.2:8000/xiaozhi/v1/"
    assert with_device_language(url, {}, {"language": "zh-CN"}) == url + "?language=zh"
    assert with_device_language(url, {"accept-language": "en-US"}, {}) == url + "?language=en"
    assert with_device_language(url, {}, {"language": "ja-JP"}) == url  # not one we speak
    assert with_device_language(url, {}, {"language": 7}) == url  # not a string: ignored
    mixed = with_device_language(url + "?x=1&language=en", {}, {"language": "zh-CN"})
    assert parse_qs(urlsplit(mixed).query) == {"x": ["1"], "language": ["zh"]}
    reply = build_ota_response(
        headers={"Device-Id": "aa:bb:cc:dd:ee:ff", "Client-Id": "c1"},
        body={"language": "zh-CN"},
        settings=OtaSettings(),
        auth_settings=AuthSettings(),
        websocket_url=url,
        now=0.0,
    )
    assert reply["websocket"]["url"] == url + "?language=zh"


class RecordingAsr(FakeAsr):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str]] = []

    async def transcribe(self, pcm: np.ndarray, language: Language, fallback: str = "") -> Transcript:
        self.asked.append((language, fallback))
        return await super().transcribe(pcm, language)


def _conversation(device_language: str) -> tuple[Conversation, RecordingAsr, FakeLlm]:
    asr, llm = RecordingAsr(), FakeLlm(["好的。"])
    stages = Stages(vad=FakeVad(), asr=asr, llm=llm, tts=FakeTts())
    history = ChatHistory({"en": "english prompt", "zh": "中文提示"})
    conv = Conversation(
        "s1", Out(), stages, GatewaySettings(min_utterance_ms=0), Metrics(), history,
        device_language=device_language,
    )  # fmt: skip
    return conv, asr, llm


async def test_asr_falls_back_to_the_devices_language() -> None:
    conv, asr, _ = _conversation("zh")
    await speak(conv)
    await wait_reply(conv)
    assert asr.asked == [("auto", "zh")]
    unknown, asr, _ = _conversation("")
    await speak(unknown)
    await wait_reply(unknown)
    assert asr.asked == [("auto", "")]  # the ASR stage's own fallback_language decides
