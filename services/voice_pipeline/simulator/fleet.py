"""A fleet of simulated devices from one asyncio process: the standard workload of
docs/benchmark-workload.md.

Device i connects at i x ramp / N, then loops: the next clip (from a seeded starting point) paced
in real time, silence until the server reports the end of speech or 3 s, the reply played back in
real time, a seeded think time (uniform 3-8 s). New turns stop at ramp + duration; turns in flight
finish. The generator must never be the bottleneck, so clips are Opus-encoded once, reply audio is
measured from packet headers instead of decoded, and the process reports its own CPU and event
loop lag beside the results (a lagging loop would delay sends and inflate latencies).
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voice_pipeline.simulator.device import UPLINK_RATE, EncodedClip, SimulatedDevice, encode_clip
from voice_pipeline.simulator.stats import TurnRecord, distribution, summarize

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures"
DEFAULT_CLIPS = ("en_weather.wav", "en_hello.wav", "zh_story.wav", "zh_hello.wav")
LAG_PROBE_S = 0.1


@dataclass(frozen=True)
class FleetConfig:
    url: str
    devices: int
    duration_s: float = 120.0
    ramp_s: float = 10.0
    think_min_s: float = 3.0
    think_max_s: float = 8.0
    seed: int = 0
    turn_timeout_s: float = 30.0
    protocol_version: int = 1

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "devices": self.devices,
            "duration_s": self.duration_s,
            "ramp_s": self.ramp_s,
            "think_s": [self.think_min_s, self.think_max_s],
            "seed": self.seed,
            "turn_timeout_s": self.turn_timeout_s,
        }


def default_clip_paths() -> list[Path]:
    return [FIXTURES / name for name in DEFAULT_CLIPS]


def load_clips(paths: Sequence[str | Path]) -> list[EncodedClip]:
    """Read, resample to the uplink rate and Opus-encode each clip once."""
    from voice_pipeline.common.audio import read_wav, resample

    clips = []
    for path in paths:
        pcm, rate = read_wav(path)
        name = Path(path).stem
        language = "zh" if name.startswith("zh") else "en" if name.startswith("en") else ""
        clips.append(encode_clip(resample(pcm, rate, UPLINK_RATE), name, language))
    return clips


class Fleet:
    def __init__(self, config: FleetConfig, clips: Sequence[EncodedClip]) -> None:
        if config.devices < 1:
            raise ValueError("a fleet needs at least one device")
        if not clips:
            raise ValueError("a fleet needs at least one clip")
        self.config = config
        self.clips = list(clips)
        self.records: list[TurnRecord] = []
        self.connected = 0
        self.lags_ms: list[float] = []
        self._t0 = 0.0
        self._stop_at = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    async def run(self, progress: Callable[[Fleet], None] | None = None) -> dict[str, Any]:
        cfg = self.config
        started_at = datetime.now(UTC)
        cpu0 = time.process_time()
        self._t0 = time.monotonic()
        self._stop_at = self._t0 + cfg.ramp_s + cfg.duration_s
        probe = asyncio.create_task(self._probe_lag())
        reporter = asyncio.create_task(self._report(progress)) if progress else None
        try:
            await asyncio.gather(*(self._device(i) for i in range(cfg.devices)))
        finally:
            for task in (probe, reporter):
                if task is not None:
                    task.cancel()
            await asyncio.gather(probe, *([reporter] if reporter else []), return_exceptions=True)
        wall = self.elapsed()
        cpu = time.process_time() - cpu0
        if progress:
            progress(self)
        return {
            **cfg.as_json(),
            "started_at": started_at.isoformat(timespec="seconds"),
            "wall_s": round(wall, 1),
            "clips": [c.name for c in self.clips],
            **summarize(self.records),
            "client": {
                "cpu_seconds": round(cpu, 2),
                "cpu_cores": round(cpu / wall, 3) if wall else 0.0,  # 1.0 = one core busy
                "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "loop_lag_ms": distribution(self.lags_ms),
            },
        }

    async def _device(self, index: int) -> None:
        cfg = self.config
        rng = random.Random(cfg.seed * 1_000_003 + index)
        await _sleep_until(self._t0 + index * cfg.ramp_s / cfg.devices)
        device: SimulatedDevice | None = None
        # Each device cycles through every clip from a seeded starting point: every device speaks
        # both languages, and a short run still covers every clip.
        turn = rng.randrange(len(self.clips))
        try:
            while time.monotonic() < self._stop_at:
                clip = self.clips[turn % len(self.clips)]
                turn += 1
                if device is None:
                    device = SimulatedDevice(
                        cfg.url, protocol_version=cfg.protocol_version, decode_audio=False
                    )
                    try:
                        await device.connect()
                    except Exception as exc:  # refused, handshake rejected, no hello: one failed turn
                        self._record(index, clip, error=f"connect failed: {type(exc).__name__}: {exc}"[:200])
                        await asyncio.gather(device.close(), return_exceptions=True)
                        device = None
                        await asyncio.sleep(rng.uniform(cfg.think_min_s, cfg.think_max_s))
                        continue
                    self.connected += 1
                started = self.elapsed()
                try:
                    result = await device.turn(clip, timeout=cfg.turn_timeout_s)
                except Exception as exc:  # a broken connection mid-turn is one failed turn, not a crash
                    self._record(index, clip, started=started, error=f"{type(exc).__name__}: {exc}"[:200])
                    result = None
                if result is not None:
                    self.records.append(
                        TurnRecord(
                            device=index,
                            started_s=round(started, 3),
                            clip=clip.name,
                            ok=result.ok,
                            stt_ms=result.stt_ms,
                            first_token_ms=result.first_token_ms,
                            first_audio_ms=result.first_audio_ms,
                            audio_seconds=round(result.audio_seconds, 3),
                            error=result.error
                            or ("" if result.ok else "incomplete turn (no transcript or audio)"),
                        )
                    )
                if result is None or result.close_code is not None:
                    await device.close()
                    device = None
                    self.connected -= 1
                think = rng.uniform(cfg.think_min_s, cfg.think_max_s)
                if time.monotonic() + think >= self._stop_at:
                    break  # no turn would start after this pause: end now instead of idling
                await asyncio.sleep(think)
        finally:
            if device is not None:
                await device.close()
                self.connected -= 1

    def _record(self, index: int, clip: EncodedClip, error: str, started: float | None = None) -> None:
        self.records.append(
            TurnRecord(
                index, round(self.elapsed() if started is None else started, 3), clip.name, False, error=error
            )
        )

    async def _probe_lag(self) -> None:
        """How late the loop wakes a sleeper: the generator's own health under load."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            self.lags_ms.append(round((time.monotonic() - before - LAG_PROBE_S) * 1000, 2))

    async def _report(self, progress: Callable[[Fleet], None]) -> None:
        while True:
            await asyncio.sleep(1.0)
            progress(self)


class ProgressLine:
    """A live status line on stderr (rewritten in place on a terminal, every 10 s otherwise)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._cpu0 = time.process_time()
        self._last_cpu = (time.monotonic(), self._cpu0)
        self._last_print = 0.0

    def __call__(self, fleet: Fleet) -> None:
        now, cpu = time.monotonic(), time.process_time()
        cpu_share = (cpu - self._last_cpu[1]) / max(1e-9, now - self._last_cpu[0])
        self._last_cpu = (now, cpu)
        records = fleet.records
        ok = sum(r.ok for r in records)
        recent = [r.first_audio_ms for r in records[-200:] if r.ok and r.first_audio_ms is not None]
        p95 = distribution(recent)["p95"]
        lag = max(fleet.lags_ms[-10:], default=0.0)
        line = (
            f"[{fleet.elapsed():6.1f}s] devices {fleet.connected}/{fleet.config.devices} "
            f"turns {len(records)} ok {ok} failed {len(records) - ok} "
            f"p95 first audio {'-' if p95 is None else f'{p95:.0f} ms'} "
            f"client cpu {cpu_share * 100:.0f}% loop lag {lag:.0f} ms"
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(110))
            self.stream.flush()
        elif now - self._last_print >= 10:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_print = now

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def one_line_summary(result: dict[str, Any]) -> str:
    fa, stt = result["first_audio_ms"], result["stt_ms"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    return (
        f"devices {result['devices']} turns {result['turns']} success {result['success_ratio'] * 100:.1f}% "
        f"first audio p50/p95/p99 {ms(fa['p50'])}/{ms(fa['p95'])}/{ms(fa['p99'])} ms "
        f"stt p50/p95 {ms(stt['p50'])}/{ms(stt['p95'])} ms "
        f"client cpu {result['client']['cpu_cores'] * 100:.0f}% of a core"
    )


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
