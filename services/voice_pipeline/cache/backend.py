"""The small storage interface every cache uses, and its in-process implementation.

Two kinds of data: plain values with a lifetime (`get`/`set`: transcripts, sentence audio, replies)
and capped append-only logs read incrementally (`append`/`read_since`: the question vectors of the
semantic cache, which each process mirrors locally and searches in numpy; see semantic.py). Redis
implements both natively (strings with EX, streams with MAXLEN); `MemoryBackend` implements them
for all-in-one mode without a Redis URL.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol


class CacheBackend(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def append(self, log: str, entry: bytes, max_len: int, ttl_s: float) -> None:
        """Add `entry` to `log`, keep about the newest `max_len`; the log lives `ttl_s` past this."""
        ...

    async def read_since(self, log: str, cursor: str, limit: int) -> tuple[str, list[bytes]]:
        """Entries appended after `cursor` ("0": from the start), oldest first, and the new cursor."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


START = "0"


class MemoryBackend:
    """Bounded (bytes) LRU with per-entry lifetimes; used when no Redis URL is set (all-in-one).

    Only this process sees it, which is all an all-in-one server needs. Entries past their lifetime
    are dropped when touched and when space is needed; the least recently used go first.
    """

    name = "memory"

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._values: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._logs: dict[str, tuple[float, deque[tuple[int, bytes]]]] = {}
        self._seq = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            self._drop(key)
            return None
        self._values.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        cost = len(key) + len(value)
        if cost > self.max_bytes:
            return  # larger than the whole cache: not worth evicting everything for
        if key in self._values:
            self._drop(key)
        self._values[key] = (self._clock() + ttl_s, value)
        self._bytes += cost
        self._evict()

    async def append(self, log: str, entry: bytes, max_len: int, ttl_s: float) -> None:
        self._seq += 1
        now = self._clock()
        _, entries = self._logs.get(log, (0.0, deque()))
        entries.append((self._seq, entry))
        while len(entries) > max_len:
            entries.popleft()
        self._logs[log] = (now + ttl_s, entries)

    async def read_since(self, log: str, cursor: str, limit: int) -> tuple[str, list[bytes]]:
        expires, entries = self._logs.get(log, (0.0, deque()))
        if expires <= self._clock():
            self._logs.pop(log, None)
            return cursor, []
        after = int(cursor)
        new = [(seq, entry) for seq, entry in entries if seq > after][:limit]
        return (str(new[-1][0]) if new else cursor), [entry for _, entry in new]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._values.clear()
        self._logs.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        _, value = self._values.pop(key)
        self._bytes -= len(key) + len(value)

    def _evict(self) -> None:
        if self._bytes <= self.max_bytes:
            return
        now = self._clock()
        for key in [k for k, (expires, _) in self._values.items() if expires <= now]:
            self._drop(key)
        while self._bytes > self.max_bytes and self._values:
            self._drop(next(iter(self._values)))
