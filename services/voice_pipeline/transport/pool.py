"""All replicas of one stage: resolve the Service name, hold a connection per replica, pick one.

A Kubernetes Service name (headless: one A record per ready pod) resolves to every replica's
address. The pool connects to each, re-resolves every `resolve_interval_s` (new pods get
connections, vanished ones are retired once idle, broken connections are re-dialled), and hands
out the least-loaded replica for each new session (see `replicas.choose`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from voice_pipeline.common.errors import ConfigError, ProviderUnavailableError
from voice_pipeline.transport import replicas
from voice_pipeline.transport.client import StageConnection

log = logging.getLogger(__name__)


def split_stage_url(url: str) -> tuple[str, int]:
    """`http://asr:9000` (or ws://, or bare host:port) -> ("asr", 9000)."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    if parts.scheme not in ("", "http", "ws") or not parts.hostname:
        raise ConfigError(f"stage URL {url!r} must look like http://host:port (plain http/ws only)")
    try:
        port = parts.port or 9000
    except ValueError as exc:
        raise ConfigError(f"stage URL {url!r}: {exc}") from None
    return parts.hostname, port


def format_address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (all pods behind a headless Service), deduplicated."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen[format_address(str(sockaddr[0]), port)] = None
    return list(seen)


Resolver = Callable[[str, int], Awaitable[list[str]]]

# A replica the autoscaler adds takes work only once resolved (docs/closed-loop.md: at 10 s, turns
# kept queueing on an overloaded replica after the new one was Ready). A lookup every 2 s per stage
# is nothing to a cluster's DNS, which answers headless Services from its own watch of endpoints.
RESOLVE_INTERVAL_S = 2.0


class ReplicaPool:
    def __init__(
        self,
        stage: str,
        url: str,
        resolve_interval_s: float = RESOLVE_INTERVAL_S,
        connect_timeout_s: float = 3.0,
        max_message_bytes: int = 4 << 20,
        resolver: Resolver | None = None,
        auth_token: str = "",
    ) -> None:
        self.stage = stage
        self._auth_token = auth_token
        self.resolver: Resolver = resolver or resolve
        self.host, self.port = split_stage_url(url)
        self.resolve_interval_s = resolve_interval_s
        self.connect_timeout_s = connect_timeout_s
        self.max_message_bytes = max_message_bytes
        self.connections: dict[str, StageConnection] = {}
        self._retired: set[str] = set()
        self._turn = 0
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._kick: asyncio.Task[None] | None = None
        self._warned: set[str] = set()

    async def start(self) -> None:
        await self.refresh()
        self._refresher = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name=f"pool-{self.stage}"
        )

    async def stop(self) -> None:
        if self._kick is not None:
            self._kick.cancel()
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for connection in list(self.connections.values()):
            await connection.close()
        self.connections.clear()

    @property
    def ready(self) -> bool:
        return any(c.connected for c in self.connections.values())

    def views(self) -> list[replicas.ReplicaView]:
        return [
            replicas.ReplicaView(address, c.load, c.connected, c.draining or address in self._retired)
            for address, c in self.connections.items()
        ]

    def view(self, connection: StageConnection) -> replicas.ReplicaView:
        return replicas.ReplicaView(
            connection.address,
            connection.load,
            connection.connected,
            connection.draining or connection.address in self._retired,
        )

    def pick(self, exclude: StageConnection | None = None) -> StageConnection:
        """The least-loaded replica for a new session (not `exclude`, unless it is the only one)."""
        views = self.views()
        if exclude is not None and len([v for v in views if v.connected]) > 1:
            views = [v for v in views if v.address != exclude.address]
        self._turn += 1
        address = replicas.choose(views, self._turn)
        if address is None:
            # Nothing connected: re-dial before giving up (a replica may just have restarted).
            self._kick_refresh()
            raise ProviderUnavailableError(
                self.stage, f"no replica of {self.host}:{self.port} is reachable (retrying in the background)"
            )
        return self.connections[address]

    async def pick_ready(self, exclude: StageConnection | None = None) -> StageConnection:
        """`pick`, but when no replica is connected, keep re-resolving and re-dialling for up to the
        connect timeout (+1 s) first: in a rolling update the replaced replica may be gone a moment
        before this gateway has dialled its successor, which is Ready and about to be in DNS."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout_s + 1.0
        while True:
            try:
                return self.pick(exclude)
            except ProviderUnavailableError:
                if loop.time() >= deadline:
                    raise
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    await self.refresh()
            if not self.ready:
                await asyncio.sleep(0.25)

    def should_move(self, connection: StageConnection) -> bool:
        return replicas.should_move(self.view(connection), self.views())

    def _kick_refresh(self) -> None:
        if not self._refresh_lock.locked() and self._kick is None:
            self._kick = asyncio.get_running_loop().create_task(self.refresh())
            self._kick.add_done_callback(self._kicked)

    def _kicked(self, task: asyncio.Task[None]) -> None:
        self._kick = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: replica refresh failed: %s", self.stage, task.exception())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resolve_interval_s)
            try:
                await self.refresh()
            except Exception:  # never let one bad refresh end the loop
                log.exception("%s: replica refresh failed", self.stage)

    async def refresh(self) -> None:
        async with self._refresh_lock:
            try:
                resolved = await self.resolver(self.host, self.port)
            except OSError as exc:
                self._warn_once(f"resolve:{exc}", f"{self.stage}: cannot resolve {self.host}: {exc}")
                return
            plan = replicas.reconcile(resolved, self.connections)
            self._retired = set(plan.retire)
            for address in plan.retire:
                connection = self.connections[address]
                if connection.load == 0 or not connection.connected:
                    await connection.close()
                    del self.connections[address]
                    self._retired.discard(address)
            dial = plan.connect + [
                a for a, c in self.connections.items() if not c.connected and a in resolved
            ]
            results = await asyncio.gather(*(self._dial(a) for a in dial))
            for address, dialled in zip(dial, results, strict=True):
                if dialled is not None:
                    # Sessions of a broken connection re-open lazily (RemoteVad moves them).
                    self.connections[address] = dialled
                    self._warned = {w for w in self._warned if not w.endswith(address)}

    async def _dial(self, address: str) -> StageConnection | None:
        connection = StageConnection(
            self.stage, address, self.connect_timeout_s, self.max_message_bytes, self._auth_token
        )
        try:
            await connection.start()
        except ProviderUnavailableError as exc:
            self._warn_once(f"dial:{address}", str(exc))
            return None
        log.info(
            "%s: connected to replica %s%s", self.stage, address, " (draining)" if connection.draining else ""
        )
        connection.on_drain = self._kick_refresh
        return connection

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)
