"""Leader election decisions: priorities, keep-alive interval, and the errors for a peering that
cannot work (kopf itself would stay paused in silence)."""

from __future__ import annotations

import pytest

from voice_operator.peering import CLUSTER_SCOPE, default_priority, keepalive_seconds, peering_problem


def test_an_older_replica_has_the_higher_priority_and_none_tie() -> None:
    older, newer = default_priority(1_764_000_000_000_000_000), default_priority(1_764_000_000_000_001_000)
    assert older > newer and older != newer  # one microsecond apart is enough
    assert abs(default_priority()) < 2**53  # exact in JSON (the KopfPeering status) and in int64


@pytest.mark.parametrize(
    ("lifetime", "interval"), [(60, (50, 55)), (30, (20, 25)), (8, (1, 3)), (4, (1, 1)), (1, (1, 1))]
)
def test_keepalive_interval_follows_kopf(lifetime: int, interval: tuple[int, int]) -> None:
    assert keepalive_seconds(lifetime) == interval


def test_a_working_peering_has_no_problem() -> None:
    assert peering_problem("vp", False, True, {"voice": 200, "lab": 200}) is None
    assert peering_problem("vp", True, True, {CLUSTER_SCOPE: 200}) is None


def test_missing_crds_name_the_file_to_apply_and_the_way_out() -> None:
    message = peering_problem("vp", False, False, {})
    assert message and "kubectl apply -f crds/kopf-peering.yaml" in message and "--standalone" in message


def test_missing_object_names_each_namespace_and_the_command_to_create_it() -> None:
    message = peering_problem("vp", False, True, {"voice": 404, "lab": 200, "edge": 404})
    assert message and "KopfPeering 'vp' does not exist in namespace(s) edge, voice" in message
    assert "kubectl -n edge apply -f -" in message and "kubectl -n voice apply -f -" in message
    assert "kubectl -n lab" not in message and "--standalone" in message
    cluster = peering_problem("vp", True, True, {CLUSTER_SCOPE: 404})
    assert cluster and "ClusterKopfPeering 'vp' does not exist" in cluster


def test_forbidden_names_the_permissions_the_role_needs() -> None:
    message = peering_problem("vp", False, True, {"voice": 403})
    assert message and "get, list, watch and patch on kopfpeerings.kopf.dev" in message and "voice" in message


def test_a_replica_that_cannot_remove_its_keep_alive_on_the_way_out_logs_one_line() -> None:
    import io
    import logging

    import kopf._cogs.clients.errors as kopf_errors

    from voice_operator.peering import KOPF_PEERING_LOGGER, PeeringExitNotice

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(KOPF_PEERING_LOGGER)
    logger.addHandler(handler)
    notice = PeeringExitNotice()
    logger.addFilter(notice)
    try:
        try:
            raise kopf_errors.APIUnauthorizedError({"message": "Unauthorized"}, status=401, headers={})
        except kopf_errors.APIError:
            logger.exception("Couldn't remove self from the peering. Ignoring.")  # as kopf 1.45 does
        try:
            raise RuntimeError("something else")
        except RuntimeError:
            logger.exception("another failure")  # not ours to shorten
    finally:
        logger.removeFilter(notice)
        logger.removeHandler(handler)
    first, *rest = stream.getvalue().splitlines()
    assert first == (
        "WARNING Couldn't remove self from the peering on the way out (APIUnauthorizedError, HTTP 401); "
        "its keep-alive expires by itself after the peering lifetime"
    )
    assert rest[0] == "ERROR another failure" and "Traceback (most recent call last):" in rest
