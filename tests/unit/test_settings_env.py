"""Unknown VP_* keys are reported instead of silently ignored."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from voice_pipeline.common.errors import ConfigError
from voice_pipeline.common.settings import describe_settings, reject_unknown_env, unknown_env_keys


class Inner(BaseModel):
    beam_size: int = 1


class Outer(BaseModel):
    asr: Inner = Inner()
    redis_url: str = ""


def test_known_keys_pass_and_typos_are_listed() -> None:
    env = {
        "VP_ASR__BEAM_SIZE": "2",
        "VP_REDIS_URL": "x",
        "VP_ASR__BEEM_SIZE": "2",
        "VP_ASRX": "1",
        "PATH": "/",
    }
    assert unknown_env_keys(Outer, env) == ["VP_ASRX", "VP_ASR__BEEM_SIZE"]


def test_global_tooling_variables_are_not_settings() -> None:
    assert unknown_env_keys(Outer, {"VP_HOME": "/tmp", "VP_E2E_KUBECONFIG": "k"}) == []


def test_reject_names_the_bad_key() -> None:
    with pytest.raises(ConfigError, match="VP_ASR__BEEM_SIZE"):
        reject_unknown_env(Outer, {"VP_ASR__BEEM_SIZE": "2"})


def test_describe_lists_leaf_settings_with_env_names() -> None:
    rows = describe_settings(Outer)
    assert ("VP_ASR__BEAM_SIZE", "1", "") in rows
    assert any(r[0] == "VP_REDIS_URL" for r in rows)
