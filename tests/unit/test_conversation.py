"""The reply pipeline with fake stages: order of messages, streaming, barge-in, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voice_pipeline.common.audio import read_wav, resample
from voice_pipeline.common.errors import OverloadedError, ProviderUnavailableError
from voice_pipeline.common.metrics import Metrics
from voice_pipeline.common.stages import (
    ChatMessage,
    Language,
    SpeechAudio,
    SpeechRequest,
    Transcript,
    VadEvent,
)
from voice_pipeline.contract import TURN_STEPS
from voice_pipeline.gateway.conversation import BUSY_REPLY, Conversation, Stages
from voice_pipeline.gateway.settings import GatewaySettings
from voice_pipeline.turn.history import ChatHistory


class Out:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.closed: tuple[int, str] | None = None

    async def send_json(self, message: dict[str, Any]) -> None:
        self.events.append(message)

    async def send_audio(self, packet: bytes) -> None:
        self.events.append(packet)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def kinds(self) -> list[str]:
        out = []
        for e in self.events:
            if isinstance(e, bytes):
                if not out or out[-1] != "audio":
                    out.append("audio")
            else:
                out.append(f"{e['type']}:{e.get('state', e.get('code', ''))}".rstrip(":"))
        return out


class FakeVad:
    """Speech from the first frame; speech end on a frame of all zeros."""

    async def open(self, session_id: str) -> None: ...
    async def reset(self, session_id: str) -> None: ...
    async def close(self, session_id: str) -> None: ...

    def __init__(self) -> None:
        self.fed = 0
        self.speaking = False

    async def feed(self, session_id: str, pcm: np.ndarray) -> list[VadEvent]:
        start = self.fed
        self.fed += len(pcm)
        if pcm.any() and not self.speaking:
            self.speaking = True
            return [VadEvent("speech_start", start)]
        if not pcm.any() and self.speaking:
            self.speaking = False
            return [VadEvent("speech_end", self.fed)]
        return []


class FakeAsr:
    def __init__(self, text: str = "hello there", error: Exception | None = None) -> None:
        self.text, self.error = text, error
        self.heard: list[np.ndarray] = []

    async def transcribe(self, pcm: np.ndarray, language: Language, fallback: str = "") -> Transcript:
        self.heard.append(pcm)
        if self.error:
            raise self.error
        return Transcript(self.text, "en", len(pcm) / 16000)


class FakeLlm:
    def __init__(self, deltas: list[str], error: Exception | None = None, delay: float = 0.0) -> None:
        self.deltas, self.error, self.delay = deltas, error, delay
        self.seen: list[list[ChatMessage]] = []

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        self.seen.append(messages)
        if self.error:
            raise self.error
        for d in self.deltas:
            await asyncio.sleep(self.delay)
            yield d


class FakeTts:
    def __init__(self, packets_per_sentence: int = 3) -> None:
        self.n = packets_per_sentence
        self.texts: list[str] = []

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechAudio]:
        self.texts.append(request.text)
        yield SpeechAudio([b"\x01" * 10] * self.n, request.sample_rate, request.frame_ms, "fake")


def make(
    llm: FakeLlm, asr: FakeAsr | None = None, tts: FakeTts | None = None
) -> tuple[Conversation, Out, Stages]:
    out = Out()
    stages = Stages(vad=FakeVad(), asr=asr or FakeAsr(), llm=llm, tts=tts or FakeTts())
    settings = GatewaySettings(min_utterance_ms=0, playback_lead_ms=2000)
    conv = Conversation("s1", out, stages, settings, Metrics(), ChatHistory({"en": "prompt"}))
    return conv, out, stages


async def speak(conv: Conversation, frames: int = 10) -> None:
    await conv.listen_start("auto")
    for _ in range(frames):
        await conv.audio(np.ones(960, np.int16))
    await conv.audio(np.zeros(960, np.int16))


async def wait_reply(conv: Conversation) -> None:
    assert conv._reply is not None
    await asyncio.wait_for(conv._reply, 5)


async def test_a_turn_sends_the_protocol_sequence_and_records_history() -> None:
    llm = FakeLlm(["It is sunny today. ", "Take a hat with you!"])
    conv, out, stages = make(llm)
    await speak(conv)
    await wait_reply(conv)
    assert out.kinds() == [
        "stt", "tts:start", "llm", "tts:sentence_start", "audio", "tts:sentence_start", "audio", "tts:stop",
    ]  # fmt: skip
    assert stages.tts.texts == ["It is sunny today.", "Take a hat with you!"]  # type: ignore[attr-defined]
    assert conv.history.turns[-1] == ("hello there", "It is sunny today. Take a hat with you!")
    assert conv.last_turn is not None and conv.last_turn.first_audio is not None


async def test_first_sentence_reaches_tts_before_the_llm_finishes() -> None:
    llm = FakeLlm(["First sentence here. ", "Second ", "part ", "arrives ", "slowly."], delay=0.05)
    tts = FakeTts()
    conv, _out, _ = make(llm, tts=tts)
    await speak(conv)
    await asyncio.sleep(0.12)
    assert tts.texts == ["First sentence here."]  # spoken while the LLM is still writing
    await wait_reply(conv)


async def test_abort_cancels_the_reply_and_sends_tts_stop() -> None:
    llm = FakeLlm(["One. ", "Two. ", "Three. ", "Four."], delay=0.1)
    conv, out, _ = make(llm)
    await speak(conv)
    await asyncio.sleep(0.15)
    await conv.abort("button")
    sent = len(out.events)
    await asyncio.sleep(0.3)
    assert len(out.events) == sent  # nothing after the abort
    assert out.kinds()[-1] == "tts:stop"
    assert not conv.speaking


async def test_llm_outage_tells_the_device_and_ends_the_turn() -> None:
    conv, out, _ = make(FakeLlm([], error=ProviderUnavailableError("local", "connection refused")))
    await speak(conv)
    await wait_reply(conv)
    assert out.kinds() == ["stt", "error:reply_failed", "tts:stop"]  # no audio: never `speaking`


async def test_a_saturated_llm_gets_a_spoken_busy_answer_not_a_timeout() -> None:
    tts = FakeTts()
    conv, out, _ = make(FakeLlm([], error=OverloadedError("llm", 2)), tts=tts)
    await speak(conv)
    await wait_reply(conv)
    assert out.kinds() == ["stt", "error:overloaded", "tts:start", "tts:sentence_start", "audio", "tts:stop"]
    assert tts.texts == [BUSY_REPLY["en"]]
    # The busy sentence is neither the assistant's reply in the history nor a first-audio sample.
    assert all(BUSY_REPLY["en"] not in reply for _, reply in conv.history.turns)
    assert conv.last_turn is not None and conv.last_turn.first_audio is None


async def test_a_saturated_tts_is_reported_without_a_busy_sentence() -> None:
    class BusyTts(FakeTts):
        async def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechAudio]:
            self.texts.append(request.text)
            raise OverloadedError("tts", 4)
            yield  # an async generator

    tts = BusyTts()
    conv, out, _ = make(FakeLlm(["Fine."]), tts=tts)
    await speak(conv)
    await wait_reply(conv)
    # No audio came: the device never entered `speaking` (no `tts start`, no face, no subtitle).
    assert out.kinds() == ["stt", "error:overloaded", "tts:stop"]
    assert tts.texts == ["Fine."]


async def test_asr_overload_is_reported_without_a_reply() -> None:
    conv, out, _ = make(FakeLlm(["x."]), asr=FakeAsr(error=OverloadedError("asr", 4)))
    await speak(conv)
    await wait_reply(conv)
    assert out.kinds() == ["error:overloaded", "tts:stop"]


async def test_exit_command_closes_the_session() -> None:
    conv, out, _ = make(FakeLlm(["bye."]), asr=FakeAsr(text="退出"))
    await speak(conv)
    await wait_reply(conv)
    assert out.closed is not None and out.closed[0] == 1000


async def test_manual_mode_transcribes_on_listen_stop() -> None:
    conv, out, _ = make(FakeLlm(["Sure thing, friend."]))
    await conv.listen_start("manual")
    for _ in range(10):
        await conv.audio(np.ones(960, np.int16))
    assert out.events == []
    await conv.listen_stop()
    await wait_reply(conv)
    assert out.kinds()[0] == "stt" and out.kinds()[-1] == "tts:stop"


class SpeakingOut(Out):
    """Out that signals `tts start`: the device enters `speaking` and closes its microphone."""

    def __init__(self) -> None:
        super().__init__()
        self.speaking = asyncio.Event()

    async def send_json(self, message: dict[str, Any]) -> None:
        await super().send_json(message)
        if message.get("type") == "tts" and message.get("state") == "start":
            self.speaking.set()


async def test_audio_while_speaking_is_ignored_in_auto_mode() -> None:
    llm = FakeLlm(["A long reply. ", "Still going."], delay=0.1)
    conv, _out, stages = make(llm)
    conv.out = out = SpeakingOut()
    await speak(conv)
    await asyncio.wait_for(out.speaking.wait(), 5)  # `tts start` goes with the reply's first audio
    assert conv.speaking
    fed = stages.vad.fed  # type: ignore[attr-defined]
    await conv.audio(np.ones(960, np.int16))
    assert stages.vad.fed == fed  # type: ignore[attr-defined]
    await wait_reply(conv)


class RefusingVad(FakeVad):
    """Refuses the first `refusals` chunks as an overloaded VAD service would."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    async def feed(self, session_id: str, pcm: np.ndarray) -> list[VadEvent]:
        if self.refusals > 0:
            self.refusals -= 1
            raise OverloadedError("vad", 4)
        return await super().feed(session_id, pcm)


async def test_an_overloaded_vad_drops_chunks_and_tells_the_device_once_then_the_turn_works() -> None:
    conv, out, stages = make(FakeLlm(["Fine, thanks."]))
    stages.vad = RefusingVad(refusals=5)
    conv.stages = stages
    await conv.listen_start("auto")
    for _ in range(5):  # all refused: one message, not five, and nothing buffered
        await conv.audio(np.ones(960, np.int16))
    assert out.kinds() == ["error:overloaded"]
    assert conv._buffer.size == 0
    await speak(conv)
    await wait_reply(conv)
    assert out.kinds()[1] == "stt" and out.kinds()[-1] == "tts:stop"
    # Only the accepted chunks reached the VAD (10 voiced + 1 silent), so its sample numbers match the buffer.
    assert stages.vad.fed == 11 * 960  # type: ignore[attr-defined]


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


async def test_push_to_talk_transcribes_the_whole_clip_not_just_the_preroll() -> None:
    """Manual mode with a real 2-3 s question: every sample between press and release reaches ASR
    (the VAD marks no speech start in manual mode, so the buffer used to keep only ~0.8 s)."""
    pcm, rate = read_wav(FIXTURES / "en_weather.wav")
    clip = resample(pcm, rate, 16000)
    assert 2 * 16000 <= len(clip) <= 4 * 16000
    asr = FakeAsr(text="what is the weather")
    conv, out, _ = make(FakeLlm(["Sunny."]), asr=asr)
    await conv.listen_start("manual")
    for i in range(0, len(clip), 960):  # 60 ms frames, as the device sends them
        await conv.audio(clip[i : i + 960])
    await conv.listen_stop()
    await wait_reply(conv)
    assert len(asr.heard) == 1
    assert np.array_equal(asr.heard[0], clip)
    assert out.kinds()[0] == "stt" and out.kinds()[-1] == "tts:stop"


async def test_push_to_talk_held_too_long_is_cut_at_the_utterance_cap() -> None:
    asr = FakeAsr()
    conv, _out, _ = make(FakeLlm(["Ok."]), asr=asr)
    conv.settings = GatewaySettings(min_utterance_ms=0, playback_lead_ms=2000, max_utterance_s=1.0)
    await conv.listen_start("manual")
    for _ in range(20):  # 1.2 s of audio
        await conv.audio(np.ones(960, np.int16))
    await wait_reply(conv)
    assert len(asr.heard) == 1 and 16000 <= len(asr.heard[0]) <= 16000 + 960
    assert conv._buffer.size < 16000


class DownVad(FakeVad):
    """A VAD stage that is down: every call fails as the remote client does."""

    def __init__(self) -> None:
        super().__init__()
        self.up = False
        self.opened = 0

    async def open(self, session_id: str) -> None:
        if not self.up:
            raise ProviderUnavailableError("vad@127.0.0.1:9", "cannot connect: connection refused")
        self.opened += 1


async def test_vad_down_at_connect_is_reported_and_the_session_recovers_later() -> None:
    conv, out, stages = make(FakeLlm(["Back again."]))
    vad = DownVad()
    stages.vad = vad
    conv.stages = stages
    await conv.open()  # used to raise ProviderUnavailableError and drop the socket (1006)
    assert out.kinds() == ["error:vad_failed"]
    await conv.listen_start("auto")
    await conv.audio(np.ones(960, np.int16))
    assert vad.fed == 0 and conv._buffer.size == 0
    vad.up = True
    conv._last_vad_open_try -= 10  # the retry interval has passed
    await speak(conv)
    await wait_reply(conv)
    assert vad.opened == 1
    assert "stt" in out.kinds() and out.kinds()[-1] == "tts:stop"


async def test_asr_failure_ends_the_turn_with_tts_stop() -> None:
    conv, out, _ = make(FakeLlm(["x."]), asr=FakeAsr(error=ProviderUnavailableError("asr", "down")))
    await speak(conv)
    await wait_reply(conv)
    assert out.kinds() == ["error:asr_failed", "tts:stop"]


async def test_a_spoken_turn_is_timed_step_by_step_from_its_last_voiced_frame() -> None:
    metrics = Metrics()
    out = Out()
    stages = Stages(
        vad=FakeVad(), asr=FakeAsr(), llm=FakeLlm(["Fine. ", "Thanks!"], delay=0.03), tts=FakeTts()
    )
    conv = Conversation(
        "s1", out, stages, GatewaySettings(min_utterance_ms=0), metrics, ChatHistory({"en": "prompt"})
    )
    await conv.listen_start("auto")
    for _ in range(10):
        await conv.audio(np.full(960, 3000, np.int16))  # -21 dBFS: voiced
    await conv.audio(np.zeros(960, np.int16))  # 60 ms of silence, then the (fake) VAD ends the turn
    await wait_reply(conv)

    def observed(step: str, what: str) -> float:
        value = metrics.registry.get_sample_value(f"voice_turn_step_seconds_{what}", {"step": step})
        assert value is not None, step
        return value

    assert all(observed(step, "count") == 1 for step in TURN_STEPS)
    assert observed("silence", "sum") == pytest.approx(0.060, abs=0.002)  # the trailing zero frame
    assert observed("llm_first_token", "sum") >= 0.03  # the fake model's first delay
    t = conv.last_turn
    assert t is not None and t.first_audio is not None and t.voice_end is not None
    total = sum(observed(step, "sum") for step in TURN_STEPS)
    assert total == pytest.approx(t.first_audio - t.voice_end)


async def test_a_typed_question_has_no_step_breakdown() -> None:
    metrics = Metrics()
    out = Out()
    stages = Stages(vad=FakeVad(), asr=FakeAsr(), llm=FakeLlm(["Fine."]), tts=FakeTts())
    conv = Conversation("s1", out, stages, GatewaySettings(), metrics, ChatHistory({"en": "prompt"}))
    await conv.detect("how are you")
    await wait_reply(conv)
    assert conv.last_turn is not None and conv.last_turn.first_audio is not None  # it was answered
    assert metrics.registry.get_sample_value("voice_turn_step_seconds_count", {"step": "asr"}) is None


class ScriptedVad(FakeVad):
    """Returns the given events, one list per fed chunk."""

    def __init__(self, script: list[list[VadEvent]]) -> None:
        super().__init__()
        self.script = script

    async def feed(self, session_id: str, pcm: np.ndarray) -> list[VadEvent]:
        self.fed += len(pcm)
        return self.script.pop(0) if self.script else []


class CountingAsr(FakeAsr):
    """Each call answers with its own number, after yielding to the loop once."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[int] = []

    async def transcribe(self, pcm: np.ndarray, language: Language, fallback: str = "") -> Transcript:
        self.heard.append(pcm)
        self.started.append(len(pcm))
        await asyncio.sleep(0)  # done long before the next chunk (10 ms): no race with the script
        return Transcript(f"call {len(self.heard)}", "en", len(pcm) / 16000)


VOICED, QUIET = np.full(960, 3000, np.int16), np.zeros(960, np.int16)  # 60 ms device chunks


async def _early_turn(
    script: list[list[VadEvent]],
    asr_busy: int = 0,
    levels: str = "",
    asr: CountingAsr | None = None,
    **settings: Any,
) -> tuple[CountingAsr, Out, Metrics]:
    """Feed one chunk per script entry: voiced, or as `levels` says ("v" voiced, "q" quiet)."""
    metrics, out, asr = Metrics(), Out(), asr or CountingAsr()
    stages = Stages(vad=ScriptedVad(script), asr=asr, llm=FakeLlm(["Fine."]), tts=FakeTts())
    stages.asr_load.inflight = asr_busy  # other sessions' transcriptions in flight
    conv = Conversation(
        "s1",
        out,
        stages,
        GatewaySettings(**{"min_utterance_ms": 0, "busy_end_extra_ms": 0} | settings),
        metrics,
        ChatHistory({"en": "prompt"}),
    )
    await conv.listen_start("auto")
    for i in range(len(script)):
        await conv.audio(QUIET if levels[i : i + 1] == "q" else VOICED)
        await asyncio.sleep(0.01)  # chunks arrive over time: an early run gets going in between
    await wait_reply(conv)
    return asr, out, metrics


def _early(metrics: Metrics, result: str) -> float | None:
    return metrics.registry.get_sample_value("voice_gateway_early_asr_total", {"result": result})


async def test_a_turn_that_ends_in_its_pause_uses_the_transcript_started_at_the_pause() -> None:
    start, pause, end = (
        VadEvent("speech_start", 0),
        VadEvent("speech_pause", 1920),
        VadEvent("speech_end", 1920),
    )
    asr, out, metrics = await _early_turn([[start], [], [pause], [], [], [], [end]])
    assert len(asr.heard) == 1  # one ASR run, begun at the pause
    assert asr.started == [3 * 960]  # the audio up to the pause
    assert [e.get("text") for e in out.events if isinstance(e, dict) and e["type"] == "stt"] == ["call 1"]
    assert _early(metrics, "used") == 1 and _early(metrics, "dropped") is None


async def test_speech_after_a_pause_drops_its_early_transcript() -> None:
    start = VadEvent("speech_start", 0)
    first, second = VadEvent("speech_pause", 1920), VadEvent("speech_pause", 4800)
    end = VadEvent("speech_end", 4800)
    asr, out, metrics = await _early_turn([[start], [first], [], [], [], [second], [], [], [end]])
    assert len(asr.heard) == 2 and asr.started == [2 * 960, 6 * 960]
    # The reply is to the whole utterance (the second run), not to the part before the first pause.
    assert [e.get("text") for e in out.events if isinstance(e, dict) and e["type"] == "stt"] == ["call 2"]
    assert _early(metrics, "used") == 1 and _early(metrics, "dropped") == 1


async def test_an_end_that_names_another_silence_transcribes_again() -> None:
    start, pause, end = (
        VadEvent("speech_start", 0),
        VadEvent("speech_pause", 1920),
        VadEvent("speech_end", 3840),
    )
    asr, _, metrics = await _early_turn([[start], [pause], [], [end]])
    assert len(asr.heard) == 2 and asr.started[-1] == 4 * 960  # the whole utterance, at its end
    assert _early(metrics, "dropped") == 1 and _early(metrics, "used") is None


class OverloadedOnceAsr(CountingAsr):
    """The first call finds the ASR queue full (a burst); later calls answer."""

    async def transcribe(self, pcm: np.ndarray, language: Language, fallback: str = "") -> Transcript:
        if not self.heard:
            self.heard.append(pcm)
            raise OverloadedError("asr", "queue full")
        return await super().transcribe(pcm, language, fallback)


async def test_a_failed_early_transcription_does_not_fail_its_turn() -> None:
    start, pause, end = (
        VadEvent("speech_start", 0),
        VadEvent("speech_pause", 1920),
        VadEvent("speech_end", 1920),
    )
    asr, out, metrics = await _early_turn([[start], [], [pause], [], [], [], [end]], asr=OverloadedOnceAsr())
    assert len(asr.heard) == 2  # the early run failed; the turn was transcribed at its end
    assert asr.started == [7 * 960]  # the second run: the whole turn, at its end
    assert _stt_texts(out) == ["call 2"]
    assert "error:overloaded" not in out.kinds() and "tts:start" in out.kinds()
    assert _early(metrics, "used") == 1 and _early(metrics, "failed") == 1


def _stt_texts(out: Out) -> list[str]:
    return [e["text"] for e in out.events if isinstance(e, dict) and e["type"] == "stt"]


async def test_quiet_after_the_voice_starts_the_transcription_before_the_vads_pause() -> None:
    # Voiced, voiced, then quiet: 60 ms of quiet (early_quiet_ms) is there at the third chunk; the
    # VAD (still scoring the tail as voice) sees its silence begin later, inside its usual tail.
    script = [[VadEvent("speech_start", 0)], [], [], [VadEvent("speech_pause", 3840)], [], [], []]
    script.append([VadEvent("speech_end", 3840)])
    asr, out, metrics = await _early_turn(script, levels="vvqqqqqq")
    assert asr.started == [3 * 960]  # one run, on the audio up to the first quiet chunk
    assert _stt_texts(out) == ["call 1"]
    assert _early(metrics, "used") == 1 and _early(metrics, "dropped") is None


async def test_voice_after_the_quiet_starts_the_transcription_again() -> None:
    script = [[VadEvent("speech_start", 0)], [], [], [], [], [], [], [VadEvent("speech_end", 6720)]]
    asr, out, metrics = await _early_turn(script, levels="vqvvqqqq")
    assert asr.started == [2 * 960, 5 * 960]  # the gap inside the speech, then the end
    assert _stt_texts(out) == ["call 2"]
    assert _early(metrics, "used") == 1 and _early(metrics, "dropped") == 1


async def test_speech_the_vad_heard_after_the_quiet_is_transcribed_at_the_end() -> None:
    # Quiet by the level but voice to the VAD (a soft-spoken word): its silence begins well past
    # the snapshot's usual tail, so the snapshot may lack words, and the turn is transcribed whole.
    script = [[VadEvent("speech_start", 0)], *([[]] * 8), [VadEvent("speech_end", 9 * 960)]]
    asr, out, metrics = await _early_turn(script, levels="vq" + "q" * 8)
    assert asr.started == [2 * 960, 10 * 960]
    assert _stt_texts(out) == ["call 2"]
    assert _early(metrics, "dropped") == 1 and _early(metrics, "used") is None


async def test_the_vads_pause_starts_again_when_the_quiets_snapshot_would_not_hold_the_turn() -> None:
    # As above, but the VAD reports its pause: a turn ending in this silence would drop the run
    # the quiet began (its silence starts past the snapshot's usual tail), so the pause begins the
    # run the end will use, instead of leaving the whole transcription to the end.
    script = [[VadEvent("speech_start", 0)], *([[]] * 7), [VadEvent("speech_pause", 7 * 960)], []]
    script.append([VadEvent("speech_end", 7 * 960)])
    asr, out, metrics = await _early_turn(script, levels="v" + "q" * 10)
    assert asr.started == [2 * 960, 9 * 960]  # the quiet's run, then the pause's
    assert _stt_texts(out) == ["call 2"]
    assert _early(metrics, "used") == 1 and _early(metrics, "dropped") == 1


class SlowCountingAsr(CountingAsr):
    async def transcribe(self, pcm: np.ndarray, language: Language, fallback: str = "") -> Transcript:
        result = await super().transcribe(pcm, language, fallback)
        await asyncio.sleep(0.3)
        return result


async def test_an_early_run_dropped_at_the_end_does_not_count_as_asr_busy() -> None:
    # The quiet starts an early run that is still in flight at the end; the VAD's silence begins
    # far past it (speech the level missed), so it is dropped. ASR is busy only with that dropped
    # run of this session: the turn is transcribed at once, not after busy_end_extra_ms.
    script = [[VadEvent("speech_start", 0)], *([[]] * 8), [VadEvent("speech_end", 9 * 960)]]
    asr, out, _ = await _early_turn(
        script, levels="vq" + "q" * 8, asr=SlowCountingAsr(), busy_end_extra_ms=180
    )
    assert asr.started == [2 * 960, 10 * 960]
    assert _stt_texts(out) == ["call 2"]


async def test_with_early_quiet_off_only_the_vads_pause_starts_early_work() -> None:
    script = [[VadEvent("speech_start", 0)], [], [], [VadEvent("speech_pause", 3840)], [], [], []]
    script.append([VadEvent("speech_end", 3840)])
    asr, _, _ = await _early_turn(script, levels="vvqqqqqq", early_quiet_ms=0)
    assert asr.started == [4 * 960]


async def test_no_early_transcription_while_the_asr_is_busy_with_other_turns() -> None:
    start, pause, end = (
        VadEvent("speech_start", 0),
        VadEvent("speech_pause", 1920),
        VadEvent("speech_end", 1920),
    )
    asr, _, metrics = await _early_turn([[start], [], [pause], [], [], [], [end]], asr_busy=1)
    assert asr.started == [7 * 960]  # one run, at the end of the turn
    assert _early(metrics, "used") is None and _early(metrics, "dropped") is None


def test_the_asr_busy_share_is_an_average_over_the_recent_time() -> None:
    from voice_pipeline.gateway.early import ASR_BUSY_HALF_LIFE_S, AsrLoad

    load = AsrLoad(updated=100.0)
    load.inflight = 1
    load.advance(100.0 + ASR_BUSY_HALF_LIFE_S)  # busy for one half-life
    assert load.busy_share == pytest.approx(0.5)
    assert not load.idle(max_busy=0.9, now=100.0 + ASR_BUSY_HALF_LIFE_S)  # one in flight
    load.inflight = 0
    assert not load.idle(max_busy=0.2, now=100.0 + 2 * ASR_BUSY_HALF_LIFE_S)  # 0.25 busy: not yet
    assert load.busy_share == pytest.approx(0.25)
    assert load.idle(max_busy=0.2, now=100.0 + 3 * ASR_BUSY_HALF_LIFE_S)  # 0.125
    assert not load.idle(max_busy=0.0, now=200.0)  # 0 = never


class ClosingLlm(FakeLlm):
    """Records how each request ended: read to its end, or closed before (cancelled)."""

    def __init__(self, deltas: list[str], error: Exception | None = None, delay: float = 0.0) -> None:
        super().__init__(deltas, error, delay)
        self.outcomes: list[str] = []

    async def stream_chat(self, messages: list[ChatMessage]) -> AsyncIterator[str]:
        finished = False
        try:
            async for delta in super().stream_chat(messages):
                yield delta
            finished = True
        finally:
            self.outcomes.append("finished" if finished else "cancelled")


PAUSE_THEN_END = [
    [VadEvent("speech_start", 0)],
    [],
    [VadEvent("speech_pause", 1920)],
    [],
    [],
    [],
    [VadEvent("speech_end", 1920)],
]


def _early_reply_conv(
    script: list[list[VadEvent]], llm: FakeLlm, **settings: Any
) -> tuple[Conversation, Out, Metrics]:
    metrics, out = Metrics(), Out()
    stages = Stages(vad=ScriptedVad(list(script)), asr=CountingAsr(), llm=llm, tts=FakeTts())
    config = GatewaySettings(min_utterance_ms=0, **({"early_reply": True} | settings))
    conv = Conversation("s1", out, stages, config, metrics, ChatHistory({"en": "p"}))
    return conv, out, metrics


async def _feed(conv: Conversation, chunks: int) -> None:
    for _ in range(chunks):
        await conv.audio(np.full(960, 3000, np.int16))
        await asyncio.sleep(0.01)  # chunks arrive over time: early work gets going in between


def _early_reply(metrics: Metrics, result: str) -> float | None:
    return metrics.registry.get_sample_value("voice_gateway_early_reply_total", {"result": result})


async def test_a_turn_that_ends_in_its_pause_is_answered_by_the_reply_begun_at_the_pause() -> None:
    llm = ClosingLlm(["Fine."])
    conv, out, metrics = _early_reply_conv(PAUSE_THEN_END, llm)
    await conv.listen_start("auto")
    await _feed(conv, len(PAUSE_THEN_END))
    await wait_reply(conv)
    assert llm.outcomes == ["finished"]  # one request, made at the pause
    assert llm.seen[0][-1] == ChatMessage("user", "call 1")
    t = conv.last_turn
    assert t is not None and t.first_token is not None and t.first_token < t.speech_end
    assert conv.stages.tts.texts == ["Fine."]  # type: ignore[attr-defined]
    assert out.kinds() == ["stt", "tts:start", "llm", "tts:sentence_start", "audio", "tts:stop"]
    assert conv.history.turns[-1] == ("call 1", "Fine.")
    assert _early_reply(metrics, "used") == 1 and _early_reply(metrics, "dropped") is None


async def test_speech_after_a_pause_cancels_the_reply_begun_there() -> None:
    script = [
        [VadEvent("speech_start", 0)],
        [VadEvent("speech_pause", 1920)],
        [], [], [],
        [VadEvent("speech_pause", 4800)],
        [], [],
        [VadEvent("speech_end", 4800)],
    ]  # fmt: skip
    llm = ClosingLlm(["Fine. ", "Thanks."], delay=0.05)  # still writing when speech goes on
    conv, out, metrics = _early_reply_conv(script, llm)
    await conv.listen_start("auto")
    await _feed(conv, len(script))
    await wait_reply(conv)
    assert llm.outcomes == ["cancelled", "finished"]
    assert [m[-1].content for m in llm.seen] == ["call 1", "call 2"]
    assert [e.get("text") for e in out.events if isinstance(e, dict) and e["type"] == "stt"] == ["call 2"]
    assert conv.history.turns[-1] == ("call 2", "Fine. Thanks.")
    assert _early_reply(metrics, "used") == 1 and _early_reply(metrics, "dropped") == 1


async def test_an_early_reply_to_an_older_history_is_asked_again() -> None:
    llm = ClosingLlm(["Fine."], delay=0.05)
    conv, _, metrics = _early_reply_conv(PAUSE_THEN_END, llm)
    await conv.listen_start("auto")
    await _feed(conv, 4)  # up to after the pause: the early reply is under way
    conv.history.commit("meanwhile", "a turn committed after the early request")
    await _feed(conv, len(PAUSE_THEN_END) - 4)
    await wait_reply(conv)
    assert llm.outcomes == ["cancelled", "finished"]
    assert (
        ChatMessage("user", "meanwhile") in llm.seen[1]
        and ChatMessage("user", "meanwhile") not in llm.seen[0]
    )
    assert _early_reply(metrics, "dropped") == 1 and _early_reply(metrics, "used") is None


async def test_with_early_reply_off_the_model_is_asked_after_the_turn_ends() -> None:
    llm = ClosingLlm(["Fine."])
    conv, _, metrics = _early_reply_conv(PAUSE_THEN_END, llm, early_reply=False)
    await conv.listen_start("auto")
    await _feed(conv, len(PAUSE_THEN_END))
    await wait_reply(conv)
    t = conv.last_turn
    assert llm.outcomes == ["finished"]
    assert t is not None and t.first_token is not None and t.first_token > t.speech_end
    assert _early_reply(metrics, "used") is None and _early_reply(metrics, "dropped") is None


async def test_a_failed_early_reply_fails_the_turn_like_a_late_one() -> None:
    llm = ClosingLlm(["x"], error=ProviderUnavailableError("llm", "down"))
    conv, out, metrics = _early_reply_conv(PAUSE_THEN_END, llm)
    await conv.listen_start("auto")
    await _feed(conv, len(PAUSE_THEN_END))
    await wait_reply(conv)
    assert len(llm.seen) == 1  # not asked a second time
    assert out.kinds() == ["stt", "error:reply_failed", "tts:stop"]  # no audio: never `speaking`
    assert _early_reply(metrics, "used") == 1


async def test_an_early_exit_command_is_not_sent_to_the_model() -> None:
    llm = ClosingLlm(["Fine."])
    conv, out, _ = _early_reply_conv(PAUSE_THEN_END, llm)
    conv.stages.asr = FakeAsr(text="退出")
    await conv.listen_start("auto")
    await _feed(conv, len(PAUSE_THEN_END))
    await wait_reply(conv)
    assert llm.seen == [] and out.closed is not None


async def test_closing_the_session_cancels_an_early_reply() -> None:
    llm = ClosingLlm(["Fine. ", "Thanks."], delay=0.05)
    conv, _, metrics = _early_reply_conv(PAUSE_THEN_END, llm)
    await conv.listen_start("auto")
    await _feed(conv, 4)  # the early reply is under way, the turn has not ended
    await conv.close()
    for _ in range(10):
        await asyncio.sleep(0.01)
        if llm.outcomes:
            break
    assert llm.outcomes == ["cancelled"]
    assert _early_reply(metrics, "dropped") == 1


class SilentOnceAsr(CountingAsr):
    """Hears nothing in its first call (noise), then numbers its calls as CountingAsr does."""

    async def transcribe(self, pcm: np.ndarray, language: Language, fallback: str = "") -> Transcript:
        got = await super().transcribe(pcm, language, fallback)
        return Transcript("" if len(self.heard) == 1 else got.text, "en", got.audio_seconds)


def _scripted(
    script: list[list[VadEvent]],
    llm: FakeLlm,
    asr: CountingAsr | None = None,
    asr_busy: int = 0,
    **settings: Any,
) -> tuple[Conversation, CountingAsr, Out, Metrics]:
    metrics, out, asr = Metrics(), Out(), asr or CountingAsr()
    stages = Stages(vad=ScriptedVad(script), asr=asr, llm=llm, tts=FakeTts())
    stages.asr_load.inflight = asr_busy  # other sessions' transcriptions in flight
    config = GatewaySettings(min_utterance_ms=0, preroll_ms=0, **settings)
    conv = Conversation("s1", out, stages, config, metrics, ChatHistory({"en": "prompt"}))
    return conv, asr, out, metrics


def _stt_texts(out: Out) -> list[str]:
    return [e["text"] for e in out.events if isinstance(e, dict) and e["type"] == "stt"]


async def test_speech_resumed_before_the_reply_plays_joins_the_same_turn() -> None:
    """A pause the VAD took for the end: the user goes on before the reply's first audio, so the
    reply is dropped unheard and the whole utterance is one turn (nothing of it is lost)."""
    start, end = VadEvent("speech_start", 0), VadEvent("speech_end", 4 * 960)
    again, end_again = VadEvent("speech_start", 6 * 960), VadEvent("speech_end", 10 * 960)
    script = [[start], [], [], [end], [], [], [again], [], [], [end_again]]
    conv, asr, out, metrics = _scripted(script, FakeLlm(["Fine."], delay=0.3))
    await conv.listen_start("auto")
    await _feed(conv, len(script))
    await wait_reply(conv)
    assert asr.started == [4 * 960, 10 * 960]  # the second transcription hears the turn from its start
    assert _stt_texts(out) == ["call 1", "call 2"]  # the device shows the whole turn's words last
    assert out.kinds().count("tts:start") == 1 and out.kinds()[-1] == "tts:stop"
    assert metrics.registry.get_sample_value("voice_gateway_turns_resumed_total") == 1
    assert [user for user, _ in conv.history.turns] == ["call 2"]  # the taken-back turn left no trace


async def test_once_the_reply_plays_the_turn_is_over_and_its_audio_gone() -> None:
    start, end = VadEvent("speech_start", 0), VadEvent("speech_end", 4 * 960)
    later, later_end = VadEvent("speech_start", 4 * 960), VadEvent("speech_end", 7 * 960)
    conv, asr, out, metrics = _scripted(
        [[start], [], [], [end], [later], [], [later_end]], FakeLlm(["Fine."])
    )
    await conv.listen_start("auto")
    await _feed(conv, 4)
    await wait_reply(conv)  # played to the end: `speaking` is over and the mic is open again
    await _feed(conv, 3)
    await wait_reply(conv)
    assert asr.started == [4 * 960, 3 * 960]  # the second turn is only the new speech
    assert metrics.registry.get_sample_value("voice_gateway_turns_resumed_total") == 0
    assert out.kinds().count("tts:start") == 2


async def test_a_turn_with_nothing_to_answer_lets_go_of_its_audio() -> None:
    start, end = VadEvent("speech_start", 0), VadEvent("speech_end", 4 * 960)
    later, later_end = VadEvent("speech_start", 6 * 960), VadEvent("speech_end", 9 * 960)
    script = [[start], [], [], [end], [], [], [later], [], [later_end]]
    conv, asr, out, metrics = _scripted(script, FakeLlm(["Fine."]), SilentOnceAsr())
    await conv.listen_start("auto")
    await _feed(conv, len(script))
    await wait_reply(conv)
    # The noise was not answered and does not come back as the start of the next turn.
    assert asr.started == [4 * 960, 3 * 960]
    assert _stt_texts(out) == ["call 2"]
    assert metrics.registry.get_sample_value("voice_gateway_turns_resumed_total") == 0


async def test_near_capacity_an_end_waits_for_more_silence_before_it_costs_a_transcription() -> None:
    # ASR busy: the turn ended at chunk 3 is transcribed 180 ms (3 chunks of 60 ms) later.
    start, end = VadEvent("speech_start", 0), VadEvent("speech_end", 4 * 960)
    script = [[start], [], [], [end]]
    conv, asr, _out, _metrics = _scripted(script, FakeLlm(["Fine."]), asr_busy=1, busy_end_extra_ms=180)
    await conv.listen_start("auto")
    await _feed(conv, 6)
    assert asr.heard == []  # 120 ms of the 180: still waiting
    await _feed(conv, 1)
    await wait_reply(conv)
    assert asr.started == [7 * 960]  # the turn and the silence waited for


async def test_near_capacity_speech_in_the_longer_wait_continues_the_turn_at_no_cost() -> None:
    start, end = VadEvent("speech_start", 0), VadEvent("speech_end", 4 * 960)
    again, end_again = VadEvent("speech_start", 5 * 960), VadEvent("speech_end", 8 * 960)
    script = [[start], [], [], [end], [again], [], [], [end_again], [], [], []]
    conv, asr, _out, metrics = _scripted(script, FakeLlm(["Fine."]), asr_busy=1, busy_end_extra_ms=180)
    await conv.listen_start("auto")
    await _feed(conv, len(script))
    await wait_reply(conv)
    assert asr.started == [11 * 960]  # one transcription, of the whole turn
    assert metrics.registry.get_sample_value("voice_gateway_turns_resumed_total") == 0


async def test_a_reply_ready_at_once_waits_out_the_hold_so_a_pause_can_still_resume() -> None:
    # Instant stages (a cache hit): the reply is ready long before the user's pause is over.
    start, end = VadEvent("speech_start", 0), VadEvent("speech_end", 4 * 960)
    again, end_again = VadEvent("speech_start", 9 * 960), VadEvent("speech_end", 12 * 960)
    script = [[start], [], [], [end], [], [], [], [], [], [again], [], [], [end_again]]
    conv, asr, out, metrics = _scripted(script, FakeLlm(["Fine."]), hold_min_ms=200)
    await conv.listen_start("auto")
    await _feed(conv, 5)
    assert "tts:start" not in out.kinds()  # held: nothing plays within 200 ms of the end
    await _feed(conv, 8)
    await wait_reply(conv)
    assert asr.started == [4 * 960, 13 * 960]  # the resumed speech joined the turn
    assert metrics.registry.get_sample_value("voice_gateway_turns_resumed_total") == 1
    assert out.kinds().count("tts:start") == 1


async def test_an_abort_before_the_reply_plays_ends_the_held_turn() -> None:
    start, end = VadEvent("speech_start", 0), VadEvent("speech_end", 4 * 960)
    later, later_end = VadEvent("speech_start", 6 * 960), VadEvent("speech_end", 9 * 960)
    script = [[start], [], [], [end], [], [], [later], [], [later_end]]
    conv, asr, _out, metrics = _scripted(script, FakeLlm(["Fine."], delay=0.3))
    await conv.listen_start("auto")
    await _feed(conv, 5)
    await conv.abort()  # the device's button while the reply is prepared
    await _feed(conv, 4)
    await wait_reply(conv)
    assert asr.started == [4 * 960, 3 * 960]  # the next turn is only the new speech
    assert metrics.registry.get_sample_value("voice_gateway_turns_resumed_total") == 0
