"""Whether any device session is open in this process: background work gives way to devices.

The gateway counts sessions (after hello) here; the start-up cache preload runs only while the
count is zero and abandons its current step the moment a session opens. On a 2-core box a preload
answer (llama.cpp generating, TTS synthesizing, embeddings) competing with a device's VAD and ASR
made first turns take 11-25 s; giving way to the LLM request alone came too late, since by then
the device's ASR had already waited for the CPU. And what a model already computes (a prompt
being evaluated, a sentence being synthesized in a thread) cannot be taken back when a device
arrives, so the preload also waits for a quiet period (`quiet_for`) before each step.
"""

from __future__ import annotations

import asyncio
import time


class SessionActivity:
    def __init__(self) -> None:
        self.sessions = 0
        self.quiet = asyncio.Event()  # set while no session is open
        self.quiet.set()
        self.active = asyncio.Event()  # set while some session is open
        self.last_change = time.monotonic()  # start-up counts as activity: devices connect then

    def quiet_for(self) -> float:
        """Seconds since the last session ended (0 while one is open)."""
        return 0.0 if self.sessions else time.monotonic() - self.last_change

    def started(self) -> None:
        self.last_change = time.monotonic()
        self.sessions += 1
        self.quiet.clear()
        self.active.set()

    def ended(self) -> None:
        self.last_change = time.monotonic()
        self.sessions = max(0, self.sessions - 1)
        if not self.sessions:
            self.active.clear()
            self.quiet.set()
