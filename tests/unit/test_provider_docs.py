"""The README's provider configuration example is valid settings (it cannot drift from the code)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from voice_pipeline.allinone import AllInOneSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_provider_example_is_valid_all_in_one_settings() -> None:
    section = README.read_text(encoding="utf-8").split("## LLM and TTS providers", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    settings = AllInOneSettings(**yaml.safe_load(example.group(1)))
    assert [p.type for p in settings.llm.providers].count("anthropic") == 1
    assert settings.llm.needs_local_server()  # the entry without base_url
    assert {"azure", "iflytek", "openai"} <= {e for names in settings.tts.engines.values() for e in names}
    assert settings.asr.backend == "openai"
