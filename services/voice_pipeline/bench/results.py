"""bench/results/*.json: one capacity search per file, read back for docs and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voice_pipeline.common.errors import ConfigError


def save(record: dict[str, Any], results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = record["date"].replace(":", "").replace("-", "")
    path = results_dir / f"{stamp}-{record['mode']}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_all(results_dir: Path) -> list[dict[str, Any]]:
    """Every capacity-search record, oldest first; a malformed file is a clear error."""
    records = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read benchmark result {path}: {exc}") from exc
        if isinstance(record, dict) and record.get("kind") == "capacity-search":
            record["_file"] = path.name
            records.append(record)
    return sorted(records, key=lambda r: r["date"])


def latest(records: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    matching = [r for r in records if r["mode"] == mode]
    return matching[-1] if matching else None


def latest_of_kind(results_dir: Path, kind: str) -> dict[str, Any] | None:
    """The newest record of another kind (e.g. "asr-accuracy") in the results directory."""
    found = []
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read benchmark result {path}: {exc}") from exc
        if isinstance(record, dict) and record.get("kind") == kind:
            found.append(record)
    return max(found, key=lambda r: str(r["date"])) if found else None
