"""Replica choice: least loaded, draining avoided, ties rotated, DNS changes reconciled."""

from __future__ import annotations

import pytest

from voice_pipeline.common.errors import ConfigError
from voice_pipeline.transport.pool import format_address, split_stage_url
from voice_pipeline.transport.replicas import ReplicaView, choose, reconcile, should_move


def r(address: str, load: int = 0, connected: bool = True, draining: bool = False) -> ReplicaView:
    return ReplicaView(address, load, connected, draining)


def test_least_loaded_connected_replica_wins() -> None:
    replicas = [r("a", 5), r("b", 2), r("c", 0, connected=False), r("d", 3)]
    assert choose(replicas) == "b"


def test_draining_replicas_take_nothing_new_while_another_is_up() -> None:
    assert choose([r("a", 9), r("b", 0, draining=True)]) == "a"
    # ...but when every connected replica drains, serving beats failing the turn.
    assert choose([r("a", 4, draining=True), r("b", 1, draining=True), r("c", connected=False)]) == "b"


def test_nothing_connected_means_no_choice() -> None:
    assert choose([r("a", connected=False)]) is None
    assert choose([]) is None


def test_ties_rotate_so_a_burst_spreads_before_load_is_counted() -> None:
    replicas = [r("b", 1), r("a", 1), r("c", 2)]
    picks = {choose(replicas, turn) for turn in range(4)}
    assert picks == {"a", "b"}


def test_sessions_spread_evenly_when_load_is_counted() -> None:
    loads = {"a": 0, "b": 0, "c": 0}
    for turn in range(30):
        chosen = choose([r(k, v) for k, v in loads.items()], turn)
        assert chosen is not None
        loads[chosen] += 1
    assert set(loads.values()) == {10}


def test_a_session_moves_off_a_draining_or_lost_replica_only_if_somewhere_else_is_up() -> None:
    others = [r("b", 3)]
    assert should_move(r("a", draining=True), [r("a", draining=True), *others])
    assert not should_move(r("a", draining=True), [r("a", draining=True), r("b", draining=True)])
    assert should_move(r("a", connected=False), others)
    assert should_move(None, others)
    assert not should_move(r("a"), [r("a"), *others])


def test_reconcile_dns_answers() -> None:
    plan = reconcile(["10.0.0.2:9000", "10.0.0.3:9000"], ["10.0.0.1:9000", "10.0.0.2:9000"])
    assert plan.connect == ["10.0.0.3:9000"] and plan.retire == ["10.0.0.1:9000"]
    assert reconcile(["x"], ["x"]).connect == reconcile(["x"], ["x"]).retire == []


def test_stage_urls_and_addresses() -> None:
    assert split_stage_url("http://office-asr:9000") == ("office-asr", 9000)
    assert split_stage_url("ws://10.1.2.3:9100/") == ("10.1.2.3", 9100)
    assert split_stage_url("vad") == ("vad", 9000)
    assert format_address("fd00::1", 9000) == "[fd00::1]:9000"
    with pytest.raises(ConfigError, match="plain http"):
        split_stage_url("https://asr:9000")
    with pytest.raises(ConfigError):
        split_stage_url("http://asr:notaport")
