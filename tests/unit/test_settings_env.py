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


SECRET = "sk-live-0123456789abcdef"


def _clean_vp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("VP_") and key not in ("VP_HOME", "VP_MODELS_DIR"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        (
            {"VP_LLM__PROVIDERS": f'[{{"name": "qwen", "api_key": "{SECRET}"}}]'},
            "VP_LLM__PROVIDERS[0].api_key",
        ),
        ({"VP_LLM__PROVIDERS": f'[{{"name": "qwen", "weight": "{SECRET}"}}]'}, "VP_LLM__PROVIDERS[0].weight"),
        ({"VP_AUTH__KEY": SECRET, "VP_GATEWAY__PORT": SECRET}, "VP_GATEWAY__PORT"),
        ({"VP_LLM__PROVIDERS": f"[{SECRET}"}, "VP_LLM__PROVIDERS:"),  # not even JSON
    ],
)
def test_an_invalid_setting_is_one_line_naming_the_key_never_the_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], key: str
) -> None:
    from voice_pipeline import cli

    _clean_vp_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["serve", "--no-install"]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and key in err, err


def test_an_invalid_setting_in_a_config_file_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: pytest.TempPathFactory
) -> None:
    from pathlib import Path

    from voice_pipeline import cli

    _clean_vp_env(monkeypatch)
    config = Path(str(tmp_path)) / "settings.yaml"
    config.write_text(f"llm:\n  providers:\n    - name: qwen\n      api_key: {SECRET}\n", encoding="utf-8")
    assert cli.main(["serve", "--no-install", "--config", str(config)]) == 2
    for stage in ("llm", "tts"):
        assert cli.main(["serve", stage, "--no-install", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "Traceback" not in err
    assert "llm.providers[0].api_key" in err


def test_a_broken_yaml_file_is_one_line_without_its_content(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: pytest.TempPathFactory
) -> None:
    from pathlib import Path

    from voice_pipeline import cli

    _clean_vp_env(monkeypatch)
    config = Path(str(tmp_path)) / "settings.yaml"
    config.write_text(f"auth:\n  key: {SECRET}\n  enabled: [\n", encoding="utf-8")
    assert cli.main(["serve", "--no-install", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and len(err.strip().splitlines()) == 1, err


def test_a_yaml_key_wins_over_the_same_env_key_and_other_env_keys_still_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the README's Configuration section says about YAML vs the environment."""
    from voice_pipeline.allinone import load_settings

    monkeypatch.setenv("VP_GATEWAY__PORT", "9100")
    monkeypatch.setenv("VP_GATEWAY__HOST", "10.0.0.7")
    settings = load_settings({"gateway": {"port": 8001}})  # as `--config` passes the YAML file
    assert (settings.gateway.port, settings.gateway.host) == (8001, "10.0.0.7")
