"""The talk and status pages in a real browser: Debian's headless Chromium with a fake microphone
playing tests/fixtures/en_weather.wav, against the all-in-one server (local ASR and TTS, the LLM
emulator) with device auth on, so the page has to present a token like a device.

Latencies are printed (pytest -s), never asserted. BROWSER_SCREENSHOTS=docs/images writes the
README's screenshots.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voice_pipeline.bench.rig import Proc, start_llm_emulator
from voice_pipeline.bench.rig import stop as stop_proc
from voice_pipeline.common.audio import resample, write_wav
from voice_pipeline.emulators.profiles import LlmProfile
from voice_pipeline.gateway.auth import make_token
from voice_pipeline.simulator.device import SimulatedDevice

from .browser import Page, chromium
from .conftest import ROOT, Server, start_server, stop_server
from .helpers import clip, words

# No skip when chromium is missing: `make test` installs it, and a skipped browser test would
# hide a broken page. chromium() says what to install.
pytestmark = pytest.mark.integration
KEY = "browser-test-key"
TURN_TIMEOUT_S = 120.0
SCREENSHOTS = os.environ.get("BROWSER_SCREENSHOTS", "")
QUESTION = words("What is the weather like today?")  # en_weather.wav


def _fake_microphone(tmp: Path) -> Path:
    """The fake microphone loops its file: a second of silence first (the page is still shaking
    hands), then the question, then silence long enough for the server's VAD to end the turn and
    for the reply to play before the question comes round again. 16-bit PCM at 48 kHz, the capture
    rate (Chromium's own resampling of a 16 kHz file is cruder than the project's)."""
    mic = tmp / "mic.wav"
    silence = np.zeros(16000, dtype=np.int16)
    pcm = np.concatenate([silence, clip("en_weather"), *([silence] * 12)])
    write_wav(mic, resample(pcm, 16000, 48000), 48000)
    return mic


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_llm_emulator(tmp_path_factory.mktemp("llm"), LlmProfile())
    yield proc
    stop_proc(proc)


def _server(tmp: Path, llm: Proc, extra: dict[str, str]) -> Server:
    env = {
        "VP_LLM__BASE_URL": f"{llm.http}/v1",
        "VP_LLM__MODEL": "emulator",
        "VP_LLM__PROVIDER_NAME": "emulator",
        "VP_TTS__EDGE_ENABLED": "false",
        "VP_GATEWAY__LANGUAGE": "en",
        **extra,
    }
    return start_server(tmp, env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, llm: Proc) -> Iterator[tuple[Server, Path]]:
    """The server with device auth on: the page must present a token like a device."""
    tmp = tmp_path_factory.mktemp("browser")
    server = _server(tmp, llm, {"VP_AUTH__ENABLED": "true", "VP_AUTH__KEY": KEY})
    yield server, _fake_microphone(tmp)
    stop_server(server)


@pytest.fixture(scope="module")
def single_seat(tmp_path_factory: pytest.TempPathFactory, llm: Proc) -> Iterator[tuple[Server, Path]]:
    """A server that takes one device at a time (auth off)."""
    tmp = tmp_path_factory.mktemp("single-seat")
    server = _server(tmp, llm, {"VP_GATEWAY__MAX_SESSIONS": "1"})
    yield server, _fake_microphone(tmp)
    stop_server(server)


async def _with_token(page: Page, server: Server, **query: str) -> None:
    """Open the talk page as this browser's device, carrying a valid token for it."""
    await page.goto(server.http + "/")
    ident = await page.evaluate("[localStorage.getItem('vp.deviceId'), localStorage.getItem('vp.clientId')]")
    token = make_token(KEY, ident[1], ident[0], time.time())
    search = "&".join(f"{k}={v}" for k, v in {"token": token, **query}.items())
    await page.goto(f"{server.http}/?{search}")


async def _first_turn(page: Page, mode: str = "auto") -> dict[str, Any]:
    await page.evaluate("vpControls.connect()")
    if mode == "manual":
        # Push-to-talk: hold from the start, release once the question has been followed by a
        # second of silence (the fake microphone plays silence, the question, then silence).
        await page.wait_for("vp.state === 'connected'", 30, "the page connected")
        await page.evaluate("vpControls.listenStart()")
        await page.wait_for(
            # 10 voiced frames: the question (600 ms of it), not a click as the capture starts
            "vp.voicedFrames >= 10 && performance.now() - vp.lastVoicedAt > 1000",
            30,
            "the question, then silence",
        )
        await page.evaluate("vpControls.listenStop()")
    else:
        await page.wait_for("vp.state.startsWith('listening')", 30, "the page connected and listens")
    turn: dict[str, Any] = await page.wait_for(
        "vp.turns.length && vp.turns[0].done && vp.turns[0]", TURN_TIMEOUT_S, "a whole turn (tts stop)"
    )
    return turn


# Chromium has WebCodecs; ?codec=wasm makes the page use the vendored libopus build instead, the
# path of browsers without it.
@pytest.mark.parametrize(("mode", "codec"), [("auto", "webcodecs"), ("manual", "wasm")])
async def test_a_turn_is_heard_answered_and_timed(
    stack: tuple[Server, Path], tmp_path: Path, mode: str, codec: str
) -> None:
    server, mic = stack
    async with chromium(tmp_path, mic) as page:
        await _with_token(page, server, mode=mode, codec=codec)
        turn = await _first_turn(page, mode)
        # The reply is played (and counted) as it arrives; wait for the last frame to be decoded.
        await page.wait_for("vp.turns[0].audioSeconds > 0", 30, "reply audio decoded")
        turn = await page.evaluate("vp.turns[0]")
        vp = await page.evaluate(
            "({codec: vp.codec, seconds: vp.decodedSeconds, rms: vp.rms, sent: vp.framesSent})"
        )
        row = await page.evaluate(
            "Array.from(document.querySelectorAll('#turn-1 td'), (td) => td.textContent)"
        )
        print(
            f"\npage turn ({mode}, {codec}): {turn['transcript']!r} -> {turn['reply']!r}; stt {turn['sttMs']} ms, first token "
            f"{turn['firstTokenMs']} ms, first audio {turn['firstAudioMs']} ms after speech end; "
            f"{turn['audioSeconds']:.2f} s of audio, rms {vp['rms']:.3f}; codecs {vp['codec']}"
        )
        if SCREENSHOTS and mode == "auto":
            await page.screenshot(ROOT / SCREENSHOTS / "talk-page.png")
        await page.evaluate("vpControls.disconnect()")
    # whisper-base hears espeak's "weather" as "winner" in about one browser turn in three (Opus
    # from WebCodecs or wasm, 16 or 48 kHz alike; the simulator's identical packets always pass), so
    # the check is the question's words, most of them: garbled or missing audio matches none.
    assert len(words(turn["transcript"]) & QUESTION) >= 3, (turn, server.log_tail())
    assert turn["reply"].strip()
    expected = "libopus wasm" if codec == "wasm" else "WebCodecs"
    assert vp["codec"] == {"encoder": expected, "decoder": expected}, vp["codec"]
    assert vp["seconds"] > 0.5  # at least half a second of reply decoded
    assert vp["rms"] > 0.01  # and it is not silence (about -40 dBFS)
    assert turn["sttMs"] is not None and turn["firstTokenMs"] is not None and turn["firstAudioMs"] is not None
    assert row[1] == turn["transcript"] and row[5] == str(turn["firstAudioMs"]), row


async def test_the_stop_button_barges_in(stack: tuple[Server, Path], tmp_path: Path) -> None:
    server, mic = stack
    async with chromium(tmp_path, mic) as page:
        await _with_token(page, server, mode="auto")
        await page.evaluate("vpControls.connect()")
        await page.wait_for(
            "vp.turns.length && vp.turns[0].firstAudioMs !== null", TURN_TIMEOUT_S, "the reply's first audio"
        )
        await page.evaluate("document.getElementById('abort').click()")
        await page.wait_for("vp.aborts.length && vp.aborts[0].answered", 15, "tts stop answering the abort")
        turn = await page.evaluate("vp.turns[0]")
        sent = await page.evaluate("vp.aborts[0]")
        await page.wait_for("new Promise((ok) => setTimeout(() => ok(true), 1000))", 5)
        after = await page.evaluate("vp.framesAfterAbort")
        row = await page.evaluate("document.querySelector('#turn-1 .reply').textContent")
        await page.evaluate("vpControls.disconnect()")
    assert turn["aborted"] and turn["done"], turn
    assert sent["by"] == "button" and sent["reason"] is None, sent  # a device button sends no reason
    # Frames already on the wire when the abort left may land; the rest of the reply may not
    # (the pacer keeps at most 5 frames in flight; a whole reply is dozens).
    assert after <= 8, after
    assert "[stopped]" in row


def _talk_over_microphone(tmp: Path) -> Path:
    """The question, then 14 s of silence, in a loop: the first time it is a turn; the reply (the
    emulator's, said six times: half a minute) is still playing when the question comes round
    again, so the page hears the user talk over it. 14 s: the first reply's audio starts long
    before the second question, however slow the machine (else that question would reach the
    server while it thinks, a different kind of interruption)."""
    mic = tmp / "talk-over.wav"
    silence = np.zeros(16000, dtype=np.int16)
    pcm = np.concatenate([silence, clip("en_weather"), *([silence] * 14)])
    write_wav(mic, resample(pcm, 16000, 48000), 48000)
    return mic


@pytest.fixture(scope="module")
def talkover(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A server whose replies are long (auth off): something to talk over."""
    tmp = tmp_path_factory.mktemp("talk-over")
    llm = start_llm_emulator(tmp, LlmProfile(reply_repeat=6))
    try:
        server = _server(tmp, llm, {})
        try:
            yield server, _talk_over_microphone(tmp)
        finally:
            stop_server(server)
    finally:
        stop_proc(llm)


async def test_speaking_over_the_reply_barges_in(talkover: tuple[Server, Path], tmp_path: Path) -> None:
    server, mic = talkover
    async with chromium(tmp_path, mic) as page:
        await page.goto(server.http + "/?mode=auto")
        await page.evaluate("vpControls.connect()")
        await page.wait_for(
            "vp.turns.length && vp.turns[0].firstAudioMs !== null",
            TURN_TIMEOUT_S,
            "the long reply's first audio",
        )
        # The question comes round again over the reply: the page must hear it and interrupt.
        barge = await page.wait_for("vp.aborts.length && vp.aborts[0]", 60, "a barge-in by voice")
        # What the user said over the reply is the next turn: transcribed, answered.
        turn2 = await page.wait_for(
            "vp.turns.length > 1 && vp.turns[1].firstAudioMs !== null && vp.turns[1]",
            TURN_TIMEOUT_S,
            "the interrupting question answered",
        )
        barge = await page.evaluate("vp.aborts[0]")  # now with lateFrames (set when turn 2's reply began)
        turn1 = await page.evaluate("vp.turns[0]")
        row = await page.evaluate("document.querySelector('#turn-1 .reply').textContent")
        late_played = await page.evaluate("vp.playedAfterAbort")
        await page.evaluate("vpControls.disconnect()")
    print(
        f"\nbarge-in: {barge}; turn 1 played {turn1['audioSeconds']:.1f} s; turn 2: {turn2['transcript']!r}"
    )
    log = server.log_path.read_text(errors="replace")
    assert (barge["by"], barge["reason"], barge["turn"]) == ("voice", "wake_word_detected", 1), barge
    assert barge["answered"], barge  # the server's tts stop came back for it
    assert "abort (wake_word_detected)" in log, server.log_tail()  # the server got it, with its reason
    assert barge["playingAfter"] == 0  # nothing of the reply left scheduled
    assert late_played == 0  # nor played later, from the decoder's queue
    # Frames already on the wire may land (and are dropped); the rest of a half-minute reply may not.
    assert barge["lateFrames"] <= 8, barge
    assert turn1["aborted"] and "[stopped]" in row
    assert turn1["audioSeconds"] < 25, turn1  # cut well short of the six-fold reply
    # The interrupting speech reached the server, the words that triggered the barge-in included.
    assert len(words(turn2["transcript"]) & QUESTION) >= 3, (turn2, server.log_tail())


async def test_pressing_talk_over_the_reply_barges_in(talkover: tuple[Server, Path], tmp_path: Path) -> None:
    server, mic = talkover
    async with chromium(tmp_path, mic) as page:
        await page.goto(server.http + "/?mode=manual")
        await _first_turn_started(page)
        await page.evaluate("document.getElementById('talk').dispatchEvent(new PointerEvent('pointerdown'))")
        shown = await page.evaluate("({aborts: vp.aborts, state: vp.state, sources: vp.replySources})")
        # Frames on the wire or in the (asynchronous) decoder when the button went down land now:
        # none of them may be played.
        await asyncio.sleep(0.5)
        late_played = await page.evaluate("vp.playedAfterAbort")
        await page.evaluate("document.getElementById('talk').dispatchEvent(new PointerEvent('pointerup'))")
        await page.evaluate("vpControls.disconnect()")
    assert [(a["by"], a["reason"]) for a in shown["aborts"]] == [("press", "wake_word_detected")], shown
    assert shown["state"] == "listening" and shown["sources"] == 0, shown
    assert late_played == 0


async def _first_turn_started(page: Page) -> None:
    """Push-to-talk: the question, released, until the reply's first audio."""
    await page.evaluate("vpControls.connect()")
    await page.wait_for("vp.state === 'connected'", 30, "the page connected")
    await page.evaluate("vpControls.listenStart()")
    await page.wait_for(
        "vp.voicedFrames >= 10 && performance.now() - vp.lastVoicedAt > 1000",
        30,
        "the question, then silence",
    )
    await page.evaluate("vpControls.listenStop()")
    await page.wait_for(
        "vp.turns.length && vp.turns[0].firstAudioMs !== null", TURN_TIMEOUT_S, "the reply's first audio"
    )


async def test_a_denied_microphone_is_explained(stack: tuple[Server, Path], tmp_path: Path) -> None:
    server, mic = stack
    async with chromium(tmp_path, mic, deny_microphone=True) as page:
        await page.goto(server.http + "/")
        await page.evaluate("vpControls.connect()")
        shown = await page.evaluate("[vp.micError, vp.state, document.getElementById('notice').textContent]")
    assert shown[0] == "NotAllowedError" and shown[1] == "disconnected", shown
    assert "Microphone access was denied" in shown[2], shown


async def test_a_refused_token_is_explained_and_a_good_one_connects(
    stack: tuple[Server, Path], tmp_path: Path
) -> None:
    server, mic = stack
    async with chromium(tmp_path, mic) as page:
        await page.goto(server.http + "/?token=forged.1")
        await page.evaluate("vpControls.connect()")
        await page.wait_for("vp.state === 'refused'", 30, "the refusal")
        shown = await page.evaluate(
            "({box: !document.getElementById('token-box').hidden, code: vp.closeCode,"
            " notice: document.getElementById('notice').textContent})"
        )
        assert shown["box"] and shown["code"] == 4001, shown
        assert "4001" in shown["notice"] and "token" in shown["notice"], shown
        ident = await page.evaluate(
            "[localStorage.getItem('vp.deviceId'), localStorage.getItem('vp.clientId')]"
        )
        token = make_token(KEY, ident[1], ident[0], time.time())
        await page.evaluate(
            f"document.getElementById('token').value = {token!r}; document.getElementById('token-save').click()"
        )
        await page.wait_for("vp.state === 'connected' || vp.state.startsWith('listening')", 30, "connected")
        await page.evaluate("vpControls.disconnect()")


async def test_the_status_page_shows_the_turns(stack: tuple[Server, Path], tmp_path: Path) -> None:
    server, mic = stack
    async with chromium(tmp_path, mic) as page:
        await _with_token(page, server, mode="auto")
        await _first_turn(page)  # a turn of its own: the test does not depend on the others
        await page.evaluate("vpControls.disconnect()")
        await page.goto(server.http + "/status")
        status = await page.wait_for(
            "window.vpStatus && vpStatus.turns > 0 && vpStatus.series.length > 1 && vpStatus", 30, "status"
        )
        asr_ok = await page.evaluate("document.querySelector('#stage-asr').cells[1].textContent")
        charts = await page.evaluate("document.querySelectorAll('.uplot canvas').length")
        # Not in a cluster: the VoicePipeline section says there is no operator, and shows no table.
        pipeline = await page.evaluate(
            "[document.getElementById('pipeline').dataset.state, document.getElementById('pipeline-state').textContent,"
            " document.getElementById('pipeline-body').hidden]"
        )
        if SCREENSHOTS:
            await page.screenshot(ROOT / SCREENSHOTS / "status-page.png")
    assert status["requests"]["asr"]["ok"] > 0 and status["requests"]["llm"]["ok"] > 0, status["requests"]
    assert int(asr_ok) == status["requests"]["asr"]["ok"]
    assert status["turns"] >= 1 and status["first_audio_mean_s"] is not None
    assert charts == 4
    assert pipeline[0] == "none" and pipeline[1].startswith("No operator") and pipeline[2], pipeline


async def test_a_busy_server_is_explained_and_the_page_reconnects_when_a_seat_frees(
    single_seat: tuple[Server, Path], tmp_path: Path
) -> None:
    server, mic = single_seat
    occupant = SimulatedDevice(server.url)  # takes the only seat
    await occupant.connect()
    try:
        async with chromium(tmp_path, mic) as page:
            await page.goto(server.http + "/?mode=manual")
            await page.evaluate("vpControls.connect()")
            await page.wait_for("vp.state === 'reconnecting'", 30, "refused as busy, retrying")
            shown = await page.evaluate("[vp.closeCode, document.getElementById('notice').textContent]")
            assert shown[0] == 1013 and "busy" in shown[1], shown
            await occupant.close()
            await page.wait_for("vp.state === 'connected'", 30, "reconnected once the seat was free")
            assert await page.evaluate("document.getElementById('notice').hidden")
            await page.evaluate("vpControls.disconnect()")
    finally:
        await occupant.close()
