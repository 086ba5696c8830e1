"""Which replica of a stage gets the next session. PURE: loads in, a choice out.

Long-lived connections would pin every session on the first replica a Service name resolved to;
instead the gateway keeps one connection per replica and places each new session (a VAD stream,
an utterance, a reply) on the least-loaded one. A draining replica takes nothing new while any
other replica is up; when it is the only one left it still serves, so a rolling update with a
single replica never fails a turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaView:
    address: str  # "ip:port", stable identity of the replica
    load: int  # sessions and requests the gateway has placed on it, still open
    connected: bool
    draining: bool


def choose(replicas: Sequence[ReplicaView], turn: int = 0) -> str | None:
    """The least-loaded connected replica, non-draining first; ties rotate with `turn`.

    Rotating among equals spreads a burst of new sessions that arrive before any load is counted.
    None when no replica is connected.
    """
    connected = [r for r in replicas if r.connected]
    candidates = [r for r in connected if not r.draining] or connected
    if not candidates:
        return None
    least = min(r.load for r in candidates)
    tied = sorted(r.address for r in candidates if r.load == least)
    return tied[turn % len(tied)]


def should_move(current: ReplicaView | None, replicas: Sequence[ReplicaView]) -> bool:
    """Move a session at a turn boundary when its replica is gone or draining and another is up."""
    if current is None or not current.connected:
        return True
    if not current.draining:
        return False
    return any(r.connected and not r.draining and r.address != current.address for r in replicas)


@dataclass(frozen=True)
class Reconcile:
    connect: list[str]  # resolved now, no connection yet
    retire: list[str]  # no longer resolved: take no new work, close once idle


def reconcile(resolved: Iterable[str], known: Iterable[str]) -> Reconcile:
    """Compare a fresh DNS answer with the replicas we hold connections to."""
    resolved_set, known_set = set(resolved), set(known)
    return Reconcile(sorted(resolved_set - known_set), sorted(known_set - resolved_set))
