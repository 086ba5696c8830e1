"""Debian's headless Chromium driven over the DevTools protocol (a WebSocket: no driver binary, no
downloaded browser). Its microphone is a fake device playing a WAV file in a loop."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import websockets

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    # The reply plays without a click: the test clicks through script, not a real gesture.
    "--autoplay-policy=no-user-gesture-required",
)


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab, attached through the browser's DevTools WebSocket (flattened sessions)."""

    def __init__(self, ws: websockets.ClientConnection, session: str) -> None:
        self._ws = ws
        self._session = session
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = json.loads(raw)
            future = self._waiting.pop(msg.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(msg)
            elif msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(msg["params"]["exceptionDetails"])[:500])

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: bool = True
    ) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        body: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            body["sessionId"] = self._session
        await self._ws.send(json.dumps(body))
        msg = await asyncio.wait_for(future, 30)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return dict(msg.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if a promise), run as a user gesture."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True, "userGesture": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {json.dumps(result['exceptionDetails'])[:800]}")
        return result.get("result", {}).get("value")

    async def goto(self, url: str, timeout: float = 30.0) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'", timeout)

    async def wait_for(self, expression: str, timeout: float, what: str = "") -> Any:
        """Poll until the expression is truthy; its value, or TimeoutError saying what was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError:
                value = None  # mid-navigation: the context is being replaced
            if value:
                return value
            if time.monotonic() > deadline:
                console = "\n".join(self.console[-20:])
                raise TimeoutError(f"not within {timeout:.0f} s: {what or expression}\nconsole:\n{console}")
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _launch(
    binary: str, profile: Path, fake_audio: Path, width: int, height: int, deny_microphone: bool
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    profile.mkdir(parents=True)
    log = profile.with_suffix(".log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            *CHROMIUM_FLAGS,
            # Grants the microphone without a prompt; left out, the denial set below takes effect.
            *([] if deny_microphone else ["--use-fake-ui-for-media-stream"]),
            f"--use-file-for-fake-audio-capture={fake_audio}",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",  # the port it picked is written to DevToolsActivePort
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, log


@asynccontextmanager
async def chromium(
    tmp: Path, fake_audio: Path, width: int = 1200, height: int = 760, deny_microphone: bool = False
) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own profile) with one page; killed on exit. With
    `deny_microphone` the microphone permission is denied, as when a user clicks Block."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium is missing: `make deps-chromium` installs Debian's chromium")
    profile = tmp / f"chromium-profile-{time.monotonic_ns()}"
    process, log = await asyncio.to_thread(
        _launch, binary, profile, fake_audio, width, height, deny_microphone
    )
    reader: asyncio.Task[None] | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"chromium did not start:\n{profile.with_suffix('.log').read_text()[-3000:]}"
                )
            await asyncio.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
            page = Page(ws, "")
            reader = asyncio.create_task(page._read())
            if deny_microphone:
                permission = {"permission": {"name": "microphone"}, "setting": "denied"}
                await page.send("Browser.setPermission", permission, session=False)
            target = await page.send("Target.createTarget", {"url": "about:blank"}, session=False)
            attached = await page.send(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=False
            )
            page._session = attached["sessionId"]
            await page.send("Runtime.enable")
            await page.send("Page.enable")
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
            yield page
    finally:
        if reader is not None:
            reader.cancel()
        process.kill()
        await asyncio.to_thread(process.wait, 10)
        log.close()
