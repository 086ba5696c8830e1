"""The gateway's side of one persistent multiplexed connection to one stage replica.

Every request gets a fresh request id; the reader task routes each reply frame to the queue of
the request it answers. ERROR frames become the exceptions of `common.errors` (an `overloaded`
answer is an `OverloadedError`, which the gateway already turns into an error message to the
device). A lost connection fails every request in flight on it at once, so callers can retry on
another replica instead of waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from voice_pipeline.common.errors import OverloadedError, ProviderUnavailableError, VoicePipelineError
from voice_pipeline.transport import wire
from voice_pipeline.transport.wire import Frame, Kind

log = logging.getLogger(__name__)

STREAM_PATH = "/v1/stream"


class ConnectionLost(ProviderUnavailableError):
    """The replica went away while a request was in flight (safe to retry elsewhere)."""


class RequestRefused(ProviderUnavailableError):
    """The replica answered `bad_request`: it cannot do what the frame asks (a malformed frame, or
    a replica of an older version that does not know a newer field)."""


def error_from_frame(stage: str, address: str, frame: Frame) -> VoicePipelineError:
    """Translate an ERROR frame into the exception the in-process stage would have raised."""
    try:
        body = wire.decode_json(frame.payload)
    except wire.WireError as exc:
        return ProviderUnavailableError(f"{stage}@{address}", f"unreadable error answer: {exc}")
    code, message = str(body.get("code", "")), str(body.get("message", ""))
    if code == wire.ERROR_OVERLOADED:
        queue_size = body.get("queue_size")
        return OverloadedError(
            str(body.get("stage") or stage), int(queue_size) if isinstance(queue_size, int) else 0
        )
    if code == wire.ERROR_BAD_REQUEST:
        return RequestRefused(f"{stage}@{address}", f"{code}: {message}")
    return ProviderUnavailableError(f"{stage}@{address}", f"{code}: {message}")


class StageConnection:
    """One WebSocket to one replica; `request` for one answer, `stream` for several."""

    def __init__(
        self,
        stage: str,
        address: str,
        connect_timeout_s: float = 3.0,
        max_message_bytes: int = 4 << 20,
        auth_token: str = "",
    ) -> None:
        self.stage = stage
        self._auth_token = auth_token  # the stages' shared secret; sent only in the upgrade header
        self.address = address  # "ip:port" or "[v6]:port"
        self.url = f"ws://{address}{STREAM_PATH}"
        self.connect_timeout_s = connect_timeout_s
        self.max_message_bytes = max_message_bytes
        self.draining = False
        # Called when the replica says it drains: its pool re-resolves at once, since the replica
        # replacing it (a rolling update) is already Ready and will take the work.
        self.on_drain: Callable[[], None] | None = None
        # This replica's load as the gateway sees it, changed only here (the pool reads `load`).
        self.sessions = 0  # long-lived sessions (VAD streams) placed here
        self.inflight = 0  # requests waiting for their answer
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Queue[Frame | BaseException]] = {}
        self._ids = itertools.count(1)
        self._send_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    @property
    def load(self) -> int:
        return self.sessions + self.inflight

    async def start(self) -> None:
        """Connect and check the replica serves the expected stage (its HELLO frame)."""
        try:
            headers = {"Authorization": f"Bearer {self._auth_token}"} if self._auth_token else None
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.connect_timeout_s,
                max_size=self.max_message_bytes,
                ping_interval=20,
                ping_timeout=20,
                compression=None,
            )
            async with asyncio.timeout(self.connect_timeout_s):
                hello = wire.decode(_as_bytes(await self._ws.recv()))
            body = wire.decode_json(hello.payload) if hello.kind == Kind.HELLO else {}
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed, wire.WireError) as exc:
            await self._close_socket()
            raise ProviderUnavailableError(f"{self.stage}@{self.address}", f"cannot connect: {exc}") from exc
        if body.get("stage") != self.stage:
            await self._close_socket()
            raise ProviderUnavailableError(
                f"{self.stage}@{self.address}",
                f"expected a {self.stage} service, found {body.get('stage') or 'something else'}: "
                f"check the stage URL settings",
            )
        self.draining = bool(body.get("draining"))
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"mux-{self.stage}-{self.address}"
        )

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._close_socket()
        self._fail_all(ConnectionLost(f"{self.stage}@{self.address}", "connection closed"))

    async def _close_socket(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

    async def _read(self) -> None:
        assert self._ws is not None
        reason = "connection closed"
        try:
            async for message in self._ws:
                try:
                    frame = wire.decode(_as_bytes(message))
                except wire.WireError as exc:
                    log.warning("%s@%s sent a bad frame: %s", self.stage, self.address, exc)
                    continue
                if frame.kind == Kind.DRAIN:
                    log.info("%s replica %s is draining", self.stage, self.address)
                    self.draining = True
                    if self.on_drain is not None:
                        self.on_drain()
                    continue
                queue = self._pending.get(frame.request)
                if queue is not None:
                    queue.put_nowait(frame)
        except ConnectionClosed as exc:
            reason = f"connection closed ({exc})"
        finally:
            self._fail_all(ConnectionLost(f"{self.stage}@{self.address}", reason))

    def _fail_all(self, error: BaseException) -> None:
        for queue in self._pending.values():
            queue.put_nowait(error)

    async def _send(self, frame: Frame) -> None:
        if self._ws is None or not self.connected:
            raise ConnectionLost(f"{self.stage}@{self.address}", "not connected")
        try:
            async with self._send_lock:
                await self._ws.send(wire.encode(frame))
        except ConnectionClosed as exc:
            raise ConnectionLost(f"{self.stage}@{self.address}", f"connection closed ({exc})") from exc

    def _next_id(self) -> int:
        while True:
            request = next(self._ids) % wire.MAX_REQUEST_ID or 1
            if request not in self._pending:
                return request

    async def open_session(self, session: str) -> None:
        """Open a VAD stream here; it counts toward this replica's load until `close_session`."""
        await self.request(Kind.VAD_OPEN, session)
        self.sessions += 1

    async def close_session(self, session: str) -> None:
        """Take the stream off this replica's load at once, and close it there if still connected
        (a replica that is gone has dropped it already)."""
        self.sessions -= 1
        if self.connected:
            with contextlib.suppress(VoicePipelineError):
                await self.request(Kind.VAD_CLOSE, session)

    async def request(self, kind: Kind, session: str = "", payload: bytes = b"") -> Frame:
        """Send one request and return its single answer (OK, VAD_EVENTS, TRANSCRIPT)."""
        request, queue = self._open_request()
        try:
            await self._send(Frame(kind, request, session, payload))
            return self._check(await queue.get())
        except asyncio.CancelledError:
            self._cancel_remote(request)
            raise
        finally:
            self._close_request(request)

    async def stream(
        self, kind: Kind, session: str = "", payload: bytes = b""
    ) -> AsyncGenerator[Frame, None]:
        """Send one request and yield its answers until END; closing early cancels it remotely."""
        request, queue = self._open_request()
        finished = False
        try:
            await self._send(Frame(kind, request, session, payload))
            while True:
                item = await queue.get()  # cancelled here (barge-in): not finished, cancel remotely
                finished = isinstance(item, BaseException) or item.kind in (Kind.ERROR, Kind.END)
                frame = self._check(item)
                if frame.kind == Kind.END:
                    return
                yield frame
        finally:
            self._close_request(request)
            if not finished:
                self._cancel_remote(request)  # the caller gave up (barge-in, timeout)

    def _open_request(self) -> tuple[int, asyncio.Queue[Frame | BaseException]]:
        request = self._next_id()
        queue: asyncio.Queue[Frame | BaseException] = asyncio.Queue()
        self._pending[request] = queue
        self.inflight += 1
        return request, queue

    def _close_request(self, request: int) -> None:
        if self._pending.pop(request, None) is not None:
            self.inflight -= 1

    def _check(self, item: Frame | BaseException) -> Frame:
        if isinstance(item, BaseException):
            raise item
        if item.kind == Kind.ERROR:
            raise error_from_frame(self.stage, self.address, item)
        return item

    def _cancel_remote(self, request: int) -> None:
        """Tell the replica to stop a request nobody waits for (fire and forget, never blocks)."""
        if self.connected:
            task = asyncio.get_running_loop().create_task(self._send_quietly(Frame(Kind.CANCEL, request)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_quietly(self, frame: Frame) -> None:
        with contextlib.suppress(VoicePipelineError):
            await self._send(frame)


def _as_bytes(message: str | bytes) -> bytes:
    if isinstance(message, str):
        raise wire.WireError("text message on the stage stream (frames are binary)")
    return message
