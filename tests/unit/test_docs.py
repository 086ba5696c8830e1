"""The README's settings table is generated from the settings classes and must match them."""

from __future__ import annotations

from pathlib import Path

from voice_pipeline.docs_tables import render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert render(text) == text, "run `python -m voice_pipeline.docs_tables README.md`"


def test_readme_shows_the_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make run" in text and "make test" in text
