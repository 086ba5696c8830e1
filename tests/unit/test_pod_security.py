"""Every Pod spec the operator builds passes the "restricted" Pod Security Standard, and the checker
itself catches each rule it claims to (the chart's Pods: tests/integration/test_chart.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.pod_security import pod_spec_of, violations
from voice_operator.capacity import make_plan
from voice_operator.manifests import Owner, desired_objects
from voice_operator.profiles import load_profile
from voice_operator.spec import parse_spec


def operator_objects(spec: dict[str, Any]) -> list[dict[str, Any]]:
    parsed = parse_spec(spec)
    plan = make_plan(parsed, load_profile())
    owner = Owner("vp", "voice", "uid-1")
    return desired_objects(owner, plan, redis_url="redis://r:6379/0", providers=parsed.stages.llm.providers)


@pytest.mark.parametrize(
    "spec",
    [
        {"devices": 20},
        {"devices": 300, "nodeSize": "4c32g", "maxNodes": 4},
        {
            "devices": 60,
            "stages": {
                "llm": {
                    "providers": [
                        {
                            "name": "q",
                            "baseUrl": "http://x/v1",
                            "model": "m",
                            "apiKeySecret": {"name": "keys", "key": "q"},
                        }
                    ]
                }
            },
        },
    ],
    ids=["small", "large", "providers-with-secret"],
)
def test_every_operator_pod_is_restricted(spec: dict[str, Any]) -> None:
    pods = [(o["metadata"]["name"], pod_spec_of(o)) for o in operator_objects(spec)]
    pods = [(name, p) for name, p in pods if p is not None]
    assert len(pods) == 5  # one Deployment per stage
    for name, pod in pods:
        assert violations(pod) == [], name
        assert pod["enableServiceLinks"] is False, name  # VP_* service variables would be refused


GOOD: dict[str, Any] = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "containers": [
        {
            "name": "c",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("securityContext", "runAsNonRoot"), False, "runAsNonRoot"),
        (("securityContext", "seccompProfile"), {"type": "Unconfined"}, "seccompProfile"),
        (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation"),
        (("containers", 0, "securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "drop ALL"),
        (("containers", 0, "securityContext", "privileged"), True, "privileged"),
        (
            ("containers", 0, "securityContext", "capabilities"),
            {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
            "SYS_ADMIN",
        ),
        (("hostNetwork",), True, "hostNetwork"),
        (("volumes", 0), {"name": "h", "hostPath": {"path": "/"}}, "hostPath"),
        (("securityContext", "runAsUser"), 0, "runAsUser is 0"),
        (("containers", 0, "ports"), [{"containerPort": 80, "hostPort": 80}], "hostPort"),
    ],
)
def test_the_checker_refuses_each_rule(path: tuple[Any, ...], value: Any, message: str) -> None:
    assert violations(GOOD) == []
    bad = copy.deepcopy(GOOD)
    target: Any = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    found = violations(bad)
    assert any(message in v for v in found), found
