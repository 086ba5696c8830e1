"""The local cluster's DNS: Services and ready endpoints -> the dnsmasq hosts file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voice_pipeline.devcluster.dns import hosts_lines, write_if_changed


def svc(ns: str, name: str, cluster_ip: str) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": cluster_ip}}


def endpoints(ns: str, name: str, ready: list[str], not_ready: list[str] = []) -> dict[str, Any]:  # noqa: B006
    return {
        "metadata": {"namespace": ns, "name": name},
        "subsets": [
            {"addresses": [{"ip": ip} for ip in ready], "notReadyAddresses": [{"ip": ip} for ip in not_ready]}
        ],
    }


def test_cluster_ip_services_resolve_to_their_virtual_ip() -> None:
    lines = hosts_lines(
        [svc("voice", "vp-gateway", "10.0.0.12")], [endpoints("voice", "vp-gateway", ["172.17.0.5"])]
    )
    assert lines == ["10.0.0.12 vp-gateway.voice.svc.cluster.local"]


def test_headless_services_resolve_to_every_ready_pod_only() -> None:
    lines = hosts_lines(
        [svc("voice", "vp-asr", "None")],
        [endpoints("voice", "vp-asr", ["172.17.0.7", "172.17.0.8"], not_ready=["172.17.0.9"])],
    )
    assert lines == ["172.17.0.7 vp-asr.voice.svc.cluster.local", "172.17.0.8 vp-asr.voice.svc.cluster.local"]


def test_same_name_in_two_namespaces_and_no_endpoints() -> None:
    lines = hosts_lines(
        [svc("a", "redis", "10.0.0.3"), svc("b", "redis", "10.0.0.4"), svc("b", "vp-vad", "None")],
        [endpoints("a", "vp-vad", ["172.17.0.2"])],  # another namespace's endpoints never leak in
    )
    assert lines == ["10.0.0.3 redis.a.svc.cluster.local", "10.0.0.4 redis.b.svc.cluster.local"]


def test_the_file_is_rewritten_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "services"
    assert write_if_changed(path, ["10.0.0.3 a.b.svc.cluster.local"])
    assert not write_if_changed(path, ["10.0.0.3 a.b.svc.cluster.local"])
    assert write_if_changed(path, [])
    assert path.read_text() == ""


def pod(
    name: str, ip: str | None, phase: str = "Running", scrape: str = "true", component: str = "asr"
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "voice",
            "name": name,
            "labels": {"app.kubernetes.io/instance": "vp", "app.kubernetes.io/component": component},
            "annotations": {
                "prometheus.io/scrape": scrape,
                "prometheus.io/port": "9000",
                "prometheus.io/path": "/metrics",
            },
        },
        "status": {"podIP": ip, "phase": phase},
    }


def test_scrape_targets_label_pods_as_the_service_monitor_would() -> None:
    from voice_pipeline.devcluster.dns import scrape_targets

    groups = scrape_targets(
        [pod("vp-asr-2", "172.17.0.9"), pod("vp-asr-1", "172.17.0.8"), pod("pending", None, phase="Pending"),
         pod("no", "172.17.0.7", scrape="false"), pod("vp-gw", "172.17.0.6", component="gateway")]
    )  # fmt: skip
    assert [g["targets"] for g in groups] == [["172.17.0.8:9000"], ["172.17.0.9:9000"], ["172.17.0.6:9000"]]
    assert groups[0]["labels"] == {
        "namespace": "voice",
        "pod": "vp-asr-1",
        "service": "vp-asr",
        "__metrics_path__": "/metrics",
    }
    assert groups[2]["labels"]["service"] == "vp-gateway"
