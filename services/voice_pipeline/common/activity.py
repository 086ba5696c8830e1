"""Whether any device session is open in this process: background work gives way to devices.

The gateway counts sessions (after hello) here; the start-up cache preload runs only while the
count is zero and abandons its current step the moment a session opens. On a 2-core box a preload
answer (llama.cpp generating, TTS synthesizing, embeddings) competing with a device's VAD and ASR
made first turns take 11-25 s; giving way to the LLM request alone came too late, since by then
the device's ASR had already waited for the CPU.
"""

from __future__ import annotations

import asyncio


class SessionActivity:
    def __init__(self) -> None:
        self.sessions = 0
        self.quiet = asyncio.Event()  # set while no session is open
        self.quiet.set()
        self.active = asyncio.Event()  # set while some session is open

    def started(self) -> None:
        self.sessions += 1
        self.quiet.clear()
        self.active.set()

    def ended(self) -> None:
        self.sessions = max(0, self.sessions - 1)
        if not self.sessions:
            self.active.clear()
            self.quiet.set()
