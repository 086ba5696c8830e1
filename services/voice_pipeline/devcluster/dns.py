"""Cluster DNS for the local cluster: Services and ready endpoints -> a dnsmasq hosts file. PURE core.

No CoreDNS binary is available without a registry, but Debian's dnsmasq serves names from a hosts
directory it re-reads on every change. `hosts_lines` turns the API's Services and Endpoints into
that file (a ClusterIP Service: its virtual IP; a headless Service: one line per ready address, so
the gateway's resolver sees every stage replica, as with CoreDNS); `sync_forever` polls the API
and rewrites the file when it changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
DOMAIN = "cluster.local"


def hosts_lines(services: Iterable[Mapping[str, Any]], endpoints: Iterable[Mapping[str, Any]]) -> list[str]:
    """`<ip> <name>.<namespace>.svc.cluster.local` lines, sorted (a stable file changes only on news)."""
    ready: dict[tuple[str, str], list[str]] = {}
    for ep in endpoints:
        meta = ep.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        for subset in ep.get("subsets") or []:
            ready.setdefault(key, []).extend(
                str(a["ip"]) for a in subset.get("addresses") or [] if a.get("ip")
            )
    lines: set[str] = set()
    for svc in services:
        meta = svc.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        fqdn = f"{name}.{namespace}.svc.{DOMAIN}"
        cluster_ip = str((svc.get("spec") or {}).get("clusterIP") or "")
        if cluster_ip and cluster_ip != "None":
            lines.add(f"{cluster_ip} {fqdn}")
        else:  # headless: the ready Pods themselves
            lines.update(f"{ip} {fqdn}" for ip in ready.get((namespace, name), []))
    return sorted(lines)


def write_if_changed(path: Path, lines: list[str]) -> bool:
    text = "".join(f"{line}\n" for line in lines)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic: dnsmasq never reads half a file
    return True


def sync_forever(server: str, token: str, hosts_file: Path, interval_s: float = 0.5) -> None:
    """Poll Services and Endpoints; rewrite `hosts_file` on change. Runs until killed."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server, headers=headers, verify=False, timeout=5) as client:
        while True:
            try:
                services = client.get("/api/v1/services").raise_for_status().json()["items"]
                endpoints = client.get("/api/v1/endpoints").raise_for_status().json()["items"]
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                log.warning("dns sync: API not answering (%s); retrying", exc)
                time.sleep(2)
                continue
            if write_if_changed(hosts_file, hosts_lines(services, endpoints)):
                log.debug("dns sync: %s rewritten", hosts_file)
            time.sleep(interval_s)


def scrape_targets(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus file_sd groups for the running Pods that ask to be scraped, labelled as
    charts/voice-pipeline/files/prometheus-scrape.yaml labels them (namespace, pod, and service =
    <instance>-<component>, what the operator's default prometheusSelector matches). Debian's
    Prometheus is built without Kubernetes service discovery; this is the same discovery, done
    through the API by the local cluster's tooling."""
    groups = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        notes = meta.get("annotations") or {}
        status = pod.get("status") or {}
        ip, port = status.get("podIP"), notes.get("prometheus.io/port")
        if (
            notes.get("prometheus.io/scrape") != "true"
            or not ip
            or not port
            or status.get("phase") != "Running"
        ):
            continue
        labels = {"namespace": str(meta.get("namespace", "")), "pod": str(meta.get("name", ""))}
        pod_labels = meta.get("labels") or {}
        instance, component = (
            pod_labels.get("app.kubernetes.io/instance"),
            pod_labels.get("app.kubernetes.io/component"),
        )
        if instance and component:
            labels["service"] = f"{instance}-{component}"
        if notes.get("prometheus.io/path"):
            labels["__metrics_path__"] = str(notes["prometheus.io/path"])
        groups.append({"targets": [f"{ip}:{port}"], "labels": labels})
    return sorted(groups, key=lambda g: g["labels"]["pod"])
