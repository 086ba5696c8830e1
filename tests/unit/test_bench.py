"""Pure parts of the benchmark: search steps, fleet statistics, Opus packet sizes, profiles,
emulator replies."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from voice_pipeline.bench.profiler import area, summarize
from voice_pipeline.bench.search import next_size, supported
from voice_pipeline.common.audio import OpusDecoder, OpusEncoder
from voice_pipeline.emulators.llm import reply_language, reply_tokens
from voice_pipeline.emulators.profiles import TtsProfile
from voice_pipeline.emulators.tts import render_voice, speech_seconds, wav_header
from voice_pipeline.simulator.device import encode_clip, opus_packet_samples
from voice_pipeline.simulator.stats import TurnRecord, meets_slo, percentile
from voice_pipeline.simulator.stats import summarize as summarize_turns


def _search(truth: int, start: int = 8, max_devices: int = 400) -> tuple[list[int], int]:
    outcomes: dict[int, bool] = {}
    tried = []
    while (n := next_size(outcomes, start, max_devices=max_devices)) is not None:
        assert n not in outcomes, "a size is never run twice"
        tried.append(n)
        outcomes[n] = n <= truth
    return tried, supported(outcomes)


@pytest.mark.parametrize("truth", [1, 5, 8, 9, 37, 120])
def test_search_finds_the_supported_size_within_resolution(truth: int) -> None:
    tried, found = _search(truth)
    assert found <= truth
    assert truth - found <= max(1, int(truth * 0.1)), (tried, found)
    assert len(tried) <= 14


def test_search_when_nothing_passes_ends_at_zero() -> None:
    tried, found = _search(0)
    assert found == 0 and tried[-1] == 1


def test_search_stops_at_max_devices() -> None:
    tried, found = _search(10_000, max_devices=50)
    assert found == 50 and max(tried) == 50


def test_a_pass_above_a_failure_does_not_count() -> None:
    assert supported({8: True, 12: False, 18: True}) == 8


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([7], 99) == 7
    assert percentile([], 50) is None


def test_summary_counts_failures_against_success_not_latency() -> None:
    records = [TurnRecord(i, 0, "c", True, stt_ms=100, first_audio_ms=900 + i) for i in range(99)]
    records.append(TurnRecord(99, 0, "c", False, error="reply_timeout: 12 s"))
    summary = summarize_turns(records)
    assert summary["turns"] == 100 and summary["ok_turns"] == 99
    assert summary["success_ratio"] == 0.99
    assert summary["first_audio_ms"]["count"] == 99
    assert summary["errors"] == {"reply_timeout: ## s": 1}
    assert meets_slo(summary, 2000)
    assert not meets_slo(summary, 950)  # p95 = 994 ms
    assert not meets_slo({**summary, "success_ratio": 0.98}, 2000)


def test_opus_packet_samples_match_the_decoder() -> None:
    rng = np.random.default_rng(0)
    for rate, app in ((16000, "voip"), (24000, "audio")):
        encoder = OpusEncoder(rate, 60, application=app)
        decoder = OpusDecoder(rate, 60)
        packet = encoder.encode((rng.standard_normal(encoder.frame_size) * 3000).astype(np.int16))
        assert opus_packet_samples(packet, rate) == len(decoder.decode(packet)) == encoder.frame_size
    assert opus_packet_samples(b"", 24000) == 0


def test_encoded_clip_is_the_clip_in_60_ms_frames() -> None:
    clip = encode_clip(np.zeros(16000 * 2 + 100, np.int16), "x", "en")
    assert len(clip.frames) == 34 and clip.seconds == pytest.approx(2.04)
    assert len(clip.tail) * 60 >= 3000  # the simulator's silence after a clip, at most 3 s


def test_encoded_clip_silence_uses_dtx_as_the_firmware_does() -> None:
    """After a voiced clip the tail goes quiet the way a device's DTX encoder does: a few full
    packets, then mostly 1-byte ones, each of which the gateway decodes to a quiet 60 ms frame."""
    t = np.arange(16000) / 16000
    voiced = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    clip = encode_clip(voiced, "tone", "en")
    decoder = OpusDecoder(16000, 60)
    for packet in clip.frames:
        decoder.decode(packet)
    tiny = [len(p) <= 2 for p in clip.tail]
    assert not any(tiny[:2]) and sum(tiny) > len(tiny) // 2 and not all(tiny[5:])
    for packet in clip.tail:
        assert opus_packet_samples(packet, 16000) == 960
        frame = decoder.decode(packet)
        assert len(frame) == 960
    assert np.abs(frame.astype(np.float32)).max() < 100  # concealment has faded to quiet


def test_profile_summary_drops_idle_and_groups_by_code() -> None:
    collapsed = "\n".join(
        [
            'process 1:"python";<module> (voice_pipeline/cli.py:1);run (asyncio/base_events.py:9);Runner.run (asyncio/runners.py:118) 50',
            "<module> (voice_pipeline/cli.py:1);synthesize (voice_pipeline/tts/stage.py:90);encode (opuslib/api/encoder.py:12) 30",
            "<module> (voice_pipeline/cli.py:1);feed (voice_pipeline/vad/stage.py:40);run (onnxruntime/capi/session.py:200) 10",
            "garbage line",
        ]
    )
    prof = summarize(collapsed)
    assert prof["samples"] == 40 and prof["idle_samples"] == 50
    assert prof["areas"][0] == {"function": "opuslib", "samples": 30, "share": 0.75}
    assert prof["self"][0]["function"] == "encode (opuslib/api/encoder.py)"
    inclusive = {r["function"] for r in prof["inclusive_ours"]}
    assert "synthesize (voice_pipeline/tts/stage.py)" in inclusive
    assert not any("cli.py" in name for name in inclusive)
    assert area("feed (voice_pipeline/vad/stage.py:40)") == "voice_pipeline/vad"


def test_llm_emulator_answers_in_the_language_heard() -> None:
    zh = [{"role": "system", "content": "x"}, {"role": "user", "content": "我想听一个故事"}]
    en = [{"role": "system", "content": "你是"}, {"role": "user", "content": "tell me a joke"}]
    assert reply_language(zh) == "zh" and reply_language(en) == "en"
    zh_text = "".join(reply_tokens(zh, 4096))
    assert any("\u4e00" <= ch <= "\u9fff" for ch in zh_text)
    en_tokens = reply_tokens(en, 4096)
    assert 50 <= len("".join(en_tokens)) <= 120 and all(t.strip() for t in en_tokens)
    assert len(reply_tokens(en, 3)) == 3
    once = "".join(en_tokens)  # --reply-repeat: the same reply, said again (a long one to talk over)
    assert "".join(reply_tokens(en, 4096, repeat=3)) == " ".join([once] * 3)


def test_tts_emulator_audio_lasts_as_long_as_speech() -> None:
    profile = TtsProfile()
    assert speech_seconds("a" * 140, profile) == pytest.approx(10.0)
    assert speech_seconds("你好" * 9, profile) == pytest.approx(4.0)
    assert speech_seconds("hi", profile) == 0.3  # never empty
    voice = render_voice(24000, 1.0)
    assert len(voice) == 48000 and max(np.frombuffer(voice, "<i2")) > 1000
    assert wav_header(24000)[:4] == b"RIFF" and len(wav_header(24000)) == 44


def run_sampler_script(script: str) -> dict[str, Any]:
    """Run `script` in a fresh interpreter (its own process tree to measure) and return the JSON
    of its last output line."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "services"), str(root / "operator")])}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


SAMPLER_CHECK = """
import json, subprocess, sys, time
from voice_pipeline.bench.procstat import TreeSampler
child = subprocess.Popen(
    [sys.executable, "-c", "import sys, time\\nsys.stdin.readline()\\nt=time.process_time()\\nwhile time.process_time()-t<0.6: pass\\nsys.stdin.read()"],
    stdin=subprocess.PIPE,
)
sampler = TreeSampler({"child": child.pid}, interval=0.1).start()
child.stdin.write(b"go\\n")  # the work starts after the sampler's first reading, never before it
child.stdin.flush()
deadline = time.monotonic() + 20
track = sampler._tracks["child"]
while track.cpu1 - track.cpu0 < 0.5 and time.monotonic() < deadline:
    time.sleep(0.1)
child.stdin.close()
child.wait()
print(json.dumps(sampler.stop()["child"]))
"""


def test_tree_sampler_measures_a_busy_child_and_survives_its_exit() -> None:
    """A child busy for 0.6 s of CPU once the sampler has its first reading, then blocked until a
    sample saw that work (bounded), then gone. It used to read 0 CPU about 1 run in 10: a sample
    that began while the child lived and read its tree after it exited took 0 as its CPU."""
    usage = run_sampler_script(SAMPLER_CHECK)
    assert usage["cpu_seconds"] >= 0.3  # measured before it exited, not zero or negative after
    assert usage["rss_mib_peak"] > 1


CONTENTION_CHECK = """
import json, os, subprocess, sys, time
from voice_pipeline.bench.procstat import TreeSampler
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # this tree gets one core
sampler = TreeSampler({"tree": os.getpid()}, interval=0.1).start()
spin = "import sys, time\\nt=time.monotonic()\\nwhile time.monotonic()-t<1.0: pass\\nsys.stdin.read()"
kids = [subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE) for _ in range(2)]
time.sleep(1.5)  # both spun for 1 s of wall time on the one core, then block (alive)
usage = sampler.stop()["tree"]
for kid in kids:
    kid.stdin.close()
    kid.wait()
print(json.dumps({**usage, "machine_busy_share": sampler.machine_busy_share}))
"""


def test_tree_sampler_measures_the_wait_for_a_core() -> None:
    """Two processes spinning on one core: each runs about half the time and waits the other
    half, so the tree waits ~1 s for the core per second on it (0 would be a broken reading).
    The machine was busy at least while they spun, and never more than all of it."""
    from voice_pipeline.bench.procstat import wait_per_run

    assert wait_per_run(0.0, 1.0) is None and wait_per_run(2.0, 1.0) == 0.5
    usage = run_sampler_script(CONTENTION_CHECK)
    assert usage["on_cpu_seconds"] >= 0.3  # the kids spinning (at most 1 s: they share one core)
    assert usage["cpu_wait_per_run"] > 0.4, usage
    assert 0 < usage["machine_busy_share"] <= 1


def test_each_process_gets_only_the_settings_it_knows() -> None:
    from voice_pipeline.bench.rig import env_for, provider_env

    env = {"PATH": "/bin", "VP_HOME": "/x", **provider_env("http://127.0.0.1:1", "http://127.0.0.1:2")}
    env["VP_STAGES__ASR_URL"] = "http://127.0.0.1:3"
    vad = env_for("vad", env)
    assert vad["PATH"] == "/bin" and not any(
        k.startswith(("VP_LLM__", "VP_TTS__", "VP_STAGES__")) for k in vad
    )
    assert env_for("llm", env)["VP_LLM__BASE_URL"] == "http://127.0.0.1:1/v1"
    assert env_for("tts", env)["VP_TTS__OPENAI_BASE_URL"] == "http://127.0.0.1:2/v1"
    assert "VP_STAGES__ASR_URL" in env_for("gateway", env)
    server = env_for("server", env)
    assert server["VP_CACHE__ENABLED"] == "false" and "VP_STAGES__ASR_URL" not in server
