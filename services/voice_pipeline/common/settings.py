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
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from voice_pipeline.common.errors import ConfigError

T = TypeVar("T")

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


def _location(loc: tuple[int | str, ...], prefix: str, delimiter: str) -> tuple[str, str]:
    """(env name, YAML path) of an error location such as ('llm', 'providers', 0, 'api_key'):
    ('VP_LLM__PROVIDERS[0].api_key', 'llm.providers[0].api_key'). The section and the setting
    make the env name; anything deeper is inside that one (JSON) value."""
    head: list[str] = []
    for part in loc[:2]:
        if not isinstance(part, str):
            break
        head.append(part)
    tail = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[len(head) :])
    env = prefix + delimiter.join(p.upper() for p in head)
    return env + tail, ".".join(head) + tail


def settings_error(exc: Exception, prefix: str = "VP_", delimiter: str = "__") -> ConfigError:
    """One line naming each bad key and what is wrong, never the value: a pydantic message
    quotes the input (`input_value='sk-...'`), and a setting may be a key or a password."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            env, yaml_path = _location(tuple(error["loc"]), prefix, delimiter)
            problems.append(f"{env} ({yaml_path}): {error['msg']}")
        return ConfigError("invalid setting " + "; ".join(problems))
    # pydantic-settings' SettingsError: an env value it could not parse (bad JSON in a list or
    # map). It names only the section, so find the variable whose JSON does not parse.
    import json
    import re

    found = re.search(r'field "([^"]+)"', str(exc))
    section = f"{prefix}{found.group(1).upper()}{delimiter}" if found else prefix
    bad = []
    for key, value in sorted(os.environ.items()):
        if key.startswith(section) and value.lstrip()[:1] in ("[", "{"):
            try:
                json.loads(value)
            except ValueError:
                bad.append(key)
    names = ", ".join(bad) or section.rstrip("_")
    return ConfigError(
        f"invalid setting {names}: not valid JSON (lists and maps are JSON in the environment)"
    )


def build_settings(cls: type[T], overrides: Mapping[str, Any] | None = None) -> T:
    """`cls(**overrides)` (env + YAML), with unknown `VP_` variables and invalid values refused
    as a one-line ConfigError naming the key."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    reject_unknown_env(cls)  # type: ignore[arg-type]
    try:
        return cls(**dict(overrides or {}))
    except (ValidationError, SettingsError) as exc:
        raise settings_error(exc) from None


def load_yaml_config(path: str | Path | None) -> dict[str, Any]:
    """A YAML file of settings (same shape as the env sections, lower-case keys)."""
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        # One line, without the snippet of the file PyYAML quotes (it may hold a key).
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
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
