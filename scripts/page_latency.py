"""First-audio latency through the browser talk page beside the command-line simulator's.

One all-in-one server (local ASR and TTS, the LLM emulator, caches off so every turn does the work)
on loopback; N turns of tests/fixtures/en_weather.wav from the simulator, then N from the talk page
in headless Chromium (hands-free, WebCodecs; a fresh browser per turn) with the same clip as its fake
microphone. Both measure from the end of speech: the simulator from the end of the clip it sent, the
page from its last voiced microphone frame. Prints a table; asserts nothing.

    PYTHONPATH=services .venv/bin/python scripts/page_latency.py --turns 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the browser driver and server helpers of the integration tests

from tests.integration.browser import chromium  # noqa: E402
from tests.integration.conftest import stop_server  # noqa: E402
from tests.integration.helpers import clip  # noqa: E402
from tests.integration.test_browser import _fake_microphone, _server  # noqa: E402

from voice_pipeline.bench.rig import start_llm_emulator, stop  # noqa: E402
from voice_pipeline.emulators.profiles import LlmProfile  # noqa: E402
from voice_pipeline.simulator.device import SimulatedDevice  # noqa: E402


async def _simulator(url: str, turns: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(turns):
        device = SimulatedDevice(url)
        await device.connect()
        try:
            r = await device.turn(clip("en_weather"), timeout=90)
        finally:
            await device.close()
        rows.append(
            {"stt": r.stt_ms, "token": r.first_token_ms, "audio": r.first_audio_ms, "text": r.transcript}
        )
    return rows


async def _page(http: str, mic: Path, tmp: Path, turns: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(turns):
        async with chromium(tmp, mic) as page:
            await page.goto(http + "/?mode=auto")
            await page.evaluate("vpControls.connect()")
            t = await page.wait_for("vp.turns.length && vp.turns[0].done && vp.turns[0]", 120)
            await page.evaluate("vpControls.disconnect()")
        rows.append(
            {
                "stt": t["sttMs"],
                "token": t["firstTokenMs"],
                "audio": t["firstAudioMs"],
                "text": t["transcript"],
            }
        )
    return rows


def _median(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r[key] is not None]
    return f"{statistics.median(values):.0f}" if values else "-"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="page-latency-"))
    llm = start_llm_emulator(tmp, LlmProfile())
    # The browser tests' server (emulated LLM, no Edge TTS, English), without caches: every turn computed.
    server = await asyncio.to_thread(_server, tmp, llm, {"VP_CACHE__ENABLED": "false"})
    try:
        await _simulator(server.url, 1)  # warm-up (first inference of each model), not counted
        sim = await _simulator(server.url, args.turns)
        page = await _page(server.http, _fake_microphone(tmp), tmp, args.turns)
    finally:
        await asyncio.to_thread(stop_server, server)
        stop(llm)
    print(f"\nmedian of {args.turns} turns, ms after the end of speech ({LlmProfile().describe()})")
    print("| client | stt | first token | first audio |\n|---|---|---|---|")
    for name, rows in (("simulator", sim), ("talk page (Chromium)", page)):
        print(f"| {name} | {_median(rows, 'stt')} | {_median(rows, 'token')} | {_median(rows, 'audio')} |")
    for name, rows in (("simulator", sim), ("page", page)):
        for r in rows:
            print(f"  {name}: stt {r['stt']} token {r['token']} audio {r['audio']}  {r['text']!r}")


if __name__ == "__main__":
    asyncio.run(main())
