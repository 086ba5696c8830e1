"""Raw s16le PCM arriving in arbitrary network chunks -> PcmChunks of whole samples.

Cloud TTS APIs stream raw PCM in chunks that need not end on a sample boundary; a chunk is handed
on once it holds `min_bytes` (about 100 ms) so the first Opus frame leaves early without paying
per-packet overhead for tiny reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from voice_pipeline.tts.engine import PcmChunk

MIN_CHUNK_MS = 100


async def pcm_chunks(
    data: AsyncIterator[bytes], sample_rate: int, min_ms: int = MIN_CHUNK_MS
) -> AsyncIterator[PcmChunk]:
    min_bytes = max(2, sample_rate * 2 * min_ms // 1000)
    buffer = bytearray()
    async for piece in data:
        buffer += piece
        if len(buffer) >= min_bytes:
            whole = len(buffer) // 2 * 2
            yield PcmChunk(np.frombuffer(bytes(buffer[:whole]), dtype="<i2").astype(np.int16), sample_rate)
            del buffer[:whole]
    whole = len(buffer) // 2 * 2
    if whole:
        yield PcmChunk(np.frombuffer(bytes(buffer[:whole]), dtype="<i2").astype(np.int16), sample_rate)
