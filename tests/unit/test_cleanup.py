"""The chart's pre-delete hook: delete pipelines, wait for the operator, force only its own finalizer."""

from __future__ import annotations

from voice_operator.cleanup import CleanupResult, cleanup

FINALIZER = "voice.pipeline.dev/finalizer"


class FakeStore:
    """VoicePipelines with finalizers; an object goes away once deleted and its finalizers are empty.
    `operator_after` = polls after which a live operator removes its finalizer (None: no operator)."""

    def __init__(self, objects: dict[str, list[str]], operator_after: int | None) -> None:
        self.objects = {k: list(v) for k, v in objects.items()}
        self.deleting: set[str] = set()
        self.operator_after = operator_after
        self.polls = 0
        self.patches: list[tuple[str, list[str]]] = []

    def _settle(self) -> None:
        for name in list(self.deleting):
            if self.operator_after is not None and self.polls > self.operator_after:
                self.objects[name] = [f for f in self.objects[name] if f != FINALIZER]
            if not self.objects[name]:
                del self.objects[name]
                self.deleting.discard(name)

    def pipelines(self, namespace: str) -> dict[str, list[str]]:
        assert namespace == "voice"
        self.polls += 1
        self._settle()
        return {k: list(v) for k, v in self.objects.items()}

    def delete(self, namespace: str, name: str) -> None:
        self.deleting.add(name)

    def set_finalizers(self, namespace: str, name: str, finalizers: list[str]) -> None:
        self.patches.append((name, finalizers))
        self.objects[name] = finalizers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(store: FakeStore, timeout: float = 30, force_after: float = 10) -> tuple[CleanupResult, Clock]:
    clock = Clock()
    result = cleanup(store, "voice", FINALIZER, timeout, force_after, clock, clock.sleep, poll=1.0)
    return result, clock


def test_nothing_to_delete_returns_at_once() -> None:
    result, clock = run(FakeStore({}, operator_after=0))
    assert result.ok and result.deleted == [] and clock.now == 0


def test_the_running_operator_removes_its_finalizer_and_nothing_is_forced() -> None:
    store = FakeStore({"b": [FINALIZER], "a": [FINALIZER]}, operator_after=3)
    result, clock = run(store)
    assert result.ok and result.deleted == ["a", "b"] and result.forced == []
    assert store.patches == [] and store.objects == {} and clock.now < 10


def test_without_an_operator_only_its_own_finalizer_is_removed_after_force_after() -> None:
    store = FakeStore({"a": [FINALIZER], "b": [FINALIZER, "example.com/keep"]}, operator_after=None)
    result, clock = run(store, timeout=30, force_after=10)
    # "a" goes once forced; "b" keeps someone else's finalizer, which we never touch.
    assert result.forced == ["a", "b"] and result.remaining == ["b"] and not result.ok
    assert store.objects == {"b": ["example.com/keep"]}
    assert ("b", ["example.com/keep"]) in store.patches and clock.now >= 30
