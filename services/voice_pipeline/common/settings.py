"""Settings helpers shared by every process's settings class.

Each process has exactly one pydantic-settings class (env prefix `VP_`, nested sections with `__`,
e.g. `VP_ASR__BEAM_SIZE=2`). pydantic-settings silently ignores environment variables that match
no field, so a typo like `VP_ASR__BEEM_SIZE` would go unnoticed; `reject_unknown_env` turns it into
a clear error instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from voice_pipeline.common.errors import ConfigError

# Variables with the prefix that belong to tooling, not to a settings class.
GLOBAL_ENV = {"VP_HOME", "VP_MODELS_DIR", "VP_CONFIG"}
GLOBAL_ENV_PREFIXES = ("VP_E2E_", "VP_TEST_", "VP_BENCH_", "VP_OPERATOR_")


def _field_names(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """Upper-cased field names (and aliases) -> nested model class, if the field is a section."""
    names: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        nested = field.annotation if isinstance(field.annotation, type) else None
        section = nested if nested is not None and issubclass(nested, BaseModel) else None
        names[name.upper()] = section
        if field.alias:
            names[field.alias.upper()] = section
    return names


def unknown_env_keys(
    model: type[BaseModel], env: Mapping[str, str], prefix: str = "VP_", delimiter: str = "__"
) -> list[str]:
    unknown = []
    top = _field_names(model)
    for key in env:
        if not key.startswith(prefix) or key in GLOBAL_ENV or key.startswith(GLOBAL_ENV_PREFIXES):
            continue
        parts = key[len(prefix) :].split(delimiter)
        fields: dict[str, type[BaseModel] | None] | None = top
        for part in parts:
            if fields is None or part not in fields:
                unknown.append(key)
                break
            section = fields[part]
            fields = _field_names(section) if section is not None else None
    return sorted(unknown)


def reject_unknown_env(model: type[BaseModel], env: Mapping[str, str] | None = None) -> None:
    unknown = unknown_env_keys(model, os.environ if env is None else env)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}: check the spelling against "
            f"`voice-pipeline serve --help-settings` (the README lists every key)"
        )


def load_yaml_config(path: str | Path | None) -> dict[str, Any]:
    """A YAML file of settings (same shape as the env sections, lower-case keys)."""
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings sections")
    return data


def describe_settings(
    model: type[BaseModel], prefix: str = "VP_", delimiter: str = "__"
) -> list[tuple[str, str, str]]:
    """(env var, default, description) for every leaf setting: the README's reference table."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_settings(ann, env + delimiter, delimiter))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append(
            (env, repr(default) if not isinstance(default, str) else default or '""', field.description or "")
        )
    return rows
