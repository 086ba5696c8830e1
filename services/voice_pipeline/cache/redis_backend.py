"""`CacheBackend` on Redis (redis-py asyncio): what every replica of a stage shares.

Values are strings with `SET .. EX`; logs are streams trimmed with `XADD .. MAXLEN ~` and read
with an exclusive `XRANGE (cursor + COUNT n`, so a reader fetches only what it has not seen.
Socket timeouts are short and redis-py's own retries are off: the caller (guard.py) decides what a
slow or absent Redis means, and a request never waits on it for long. The connection pool
reconnects by itself on the next call once Redis answers again.
"""

from __future__ import annotations

from typing import Any

from voice_pipeline.cache.backend import START

_FIELD = b"e"


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, timeout_s: float) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        # No retries inside redis-py (>= 6 retries by default): the guard's deadline is the policy.
        self._client: Any = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(key)
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._client.set(key, value, px=max(1, int(ttl_s * 1000)))

    async def append(self, log: str, entry: bytes, max_len: int, ttl_s: float) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xadd(log, {_FIELD: entry}, maxlen=max_len, approximate=True)
            pipe.pexpire(log, max(1, int(ttl_s * 1000)))
            await pipe.execute()

    async def read_since(self, log: str, cursor: str, limit: int) -> tuple[str, list[bytes]]:
        low = "-" if cursor == START else f"({cursor}"
        rows = await self._client.xrange(log, min=low, max="+", count=limit)
        if not rows:
            return cursor, []
        last_id = rows[-1][0]
        new_cursor = last_id.decode() if isinstance(last_id, bytes) else str(last_id)
        return new_cursor, [bytes(fields[_FIELD]) for _, fields in rows if _FIELD in fields]

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()
