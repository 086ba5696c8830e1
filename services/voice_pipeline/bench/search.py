"""Which fleet size to try next when searching for the supported device count. PURE.

Grow geometrically from `start` until a size fails, then bisect between the largest size that
passed below it and the smallest that failed, until they are `resolution` apart (relative).
Supported devices = the largest passing size below the smallest failing one (a pass above a
failure, noise on a shared machine, does not count).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def supported(outcomes: Mapping[int, bool]) -> int:
    """Largest passing fleet size below every failing one (0 when none passed)."""
    first_fail = min((n for n, ok in outcomes.items() if not ok), default=math.inf)
    return max((n for n, ok in outcomes.items() if ok and n < first_fail), default=0)


def next_size(
    outcomes: Mapping[int, bool],
    start: int,
    growth: float = 1.5,
    resolution: float = 0.1,
    max_devices: int = 500,
) -> int | None:
    """The next fleet size to run, or None when the search is done."""
    if not outcomes:
        return max(1, start)
    low = supported(outcomes)
    fails = [n for n, ok in outcomes.items() if not ok and n > low]
    if not fails:
        if low == 0:  # even the first size failed: go down towards 1
            smallest = min(outcomes)
            return None if smallest <= 1 else max(1, smallest // 2)
        grown = max(low + 1, math.ceil(low * growth))
        return None if low >= max_devices else min(grown, max_devices)
    high = min(fails)
    if high - low <= max(1, math.floor(low * resolution)):
        return None
    mid = (low + high) // 2
    return None if mid in outcomes else mid
