"""A small interface to the Kubernetes API (get / server-side apply / events), and its real
implementation on the `kubernetes` client. Unit tests use a fake with the same methods."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from voice_pipeline import contract as c

log = logging.getLogger(__name__)


class KubeApi(Protocol):
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]: ...

    def pdb_api_version(self) -> str: ...


class OperatorApi(KubeApi, Protocol):
    """What the operator's loops need beyond the reconcile: a status patch of their own fields."""

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...


_PLURALS = {"Deployment": "deployments", "Service": "services", "ConfigMap": "configmaps",
            "PodDisruptionBudget": "poddisruptionbudgets", "VoicePipeline": "voicepipelines",
            "ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings"}  # fmt: skip


def _path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{_PLURALS[kind]}"
    return f"{path}/{name}" if name else path


class RealKubeApi:
    """Raw REST calls through the client's ApiClient: server-side apply needs the
    application/apply-patch+yaml content type, which the typed methods do not expose uniformly."""

    def __init__(self, api_client: Any) -> None:
        self.client = api_client
        self._pdb_version: str | None = None
        self.writes = 0

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        headers = {"Content-Type": content_type, "Accept": "application/json"}
        params = self.client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*params, _request_timeout=30)
        data = response.read()
        if response.status == 404:
            return None
        if response.status >= 400:
            raise ApiException(
                status=response.status, reason=f"{method} {path}: {data.decode(errors='replace')[:300]}"
            )
        return dict(json.loads(data)) if data else {}

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call("GET", _path(api_version, kind, namespace, name))

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        meta = obj["metadata"]
        path = _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        self.writes += 1
        query = [("fieldManager", field_manager), ("force", "true")]
        result = self._call(
            "PATCH", path, body=json.dumps(obj), query=query, content_type="application/apply-patch+yaml"
        )
        return result or {}

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A JSON merge patch of a VoicePipeline's status subresource (only the given fields). The
        body goes as a dict: the client serializes JSON content types itself (a str would be sent
        as one JSON string, "Invalid JSON Patch")."""
        path = _path(f"{c.API_GROUP}/{c.API_VERSION}", "VoicePipeline", namespace, name) + "/status"
        self.writes += 1
        self._call("PATCH", path, body={"status": status}, content_type="application/merge-patch+json")

    def pdb_api_version(self) -> str:
        """policy/v1 where served (Kubernetes >= 1.21), else policy/v1beta1."""
        if self._pdb_version is None:
            groups = self._call("GET", "/apis/policy") or {}
            versions = [v.get("groupVersion") for v in groups.get("versions", [])]
            self._pdb_version = "policy/v1" if "policy/v1" in versions else "policy/v1beta1"
        return self._pdb_version
