"""The chart's CRD copy and values table cannot drift from their sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from voice_pipeline.chart_docs import CHART, READMES, documented_keys, render

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("crd", ["voicepipeline.yaml", "kopf-peering.yaml"])
def test_chart_crd_is_identical_to_the_source_of_truth(crd: str) -> None:
    assert (CHART / "crds" / crd).read_bytes() == (ROOT / "crds" / crd).read_bytes(), (
        f"run: cp crds/{crd} charts/voice-pipeline/crds/"
    )


def test_chart_ships_exactly_the_project_crds() -> None:
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(
        p.name for p in (ROOT / "crds").glob("*.yaml")
    )


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_values_table_is_current(readme: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    assert render(text) == text, "run `python -m voice_pipeline.chart_docs`"


def test_values_table_follows_values_yaml() -> None:
    """A value added to values.yaml changes the rendered table (the drift check can fail)."""
    text = (CHART / "README.md").read_text(encoding="utf-8")
    assert "| `pipeline.devices` | `10` |" in text
    assert render(text.replace("| `pipeline.devices` | `10` |", "| `pipeline.devices` | `21` |")) == text


def test_every_leaf_value_is_documented() -> None:
    import yaml

    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    documented = documented_keys(text)

    def leaves(node: object, prefix: str = "") -> list[str]:
        if isinstance(node, dict) and node and prefix not in documented:
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}.{k}" if prefix else k)]
        return [prefix]

    missing = [leaf for leaf in leaves(yaml.safe_load(text)) if leaf not in documented]
    assert not missing, f"undocumented values: {missing}"


def _schema() -> dict[str, object]:
    import json

    return dict(json.loads((CHART / "values.schema.json").read_text(encoding="utf-8")))


def test_every_schema_property_is_a_documented_value() -> None:
    """values.yaml (documented) and values.schema.json (enforced) describe the same knobs."""
    documented = documented_keys((CHART / "values.yaml").read_text(encoding="utf-8"))

    def undocumented(node: dict[str, object], prefix: str = "") -> list[str]:
        if prefix in documented:
            return []
        props = node.get("properties")
        if not isinstance(props, dict):
            return [prefix]
        return [p for k, v in props.items() for p in undocumented(v, f"{prefix}.{k}" if prefix else k)]

    assert undocumented(_schema()) == []
    assert _schema()["additionalProperties"] is False


def test_stage_overrides_accept_exactly_what_the_crd_accepts() -> None:
    """pipeline.stages is copied into the VoicePipeline: the chart must refuse what the CRD refuses."""
    import yaml

    crd = yaml.safe_load((ROOT / "crds" / "voicepipeline.yaml").read_text(encoding="utf-8"))
    crd_stages = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "stages"
    ]
    chart_stages = _schema()["properties"]["pipeline"]["properties"]["stages"]  # type: ignore[index]
    assert set(chart_stages["properties"]) == set(crd_stages["properties"])
    for stage, schema in chart_stages["properties"].items():
        crd_props = crd_stages["properties"][stage]["properties"]
        for key, rule in schema["properties"].items():
            assert key in crd_props, f"{stage}.{key} is not in the CRD"
            for field in ("type", "pattern", "minimum", "maximum"):
                assert rule.get(field) == crd_props[key].get(field), f"{stage}.{key}.{field}"


def test_llm_providers_match_the_crd_and_hold_no_plain_keys() -> None:
    import yaml

    crd = yaml.safe_load((ROOT / "crds" / "voicepipeline.yaml").read_text(encoding="utf-8"))
    stages = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "stages"
    ]
    crd_item = stages["properties"]["llm"]["properties"]["providers"]["items"]
    chart_item = _schema()["properties"]["pipeline"]["properties"]["llmProviders"]["items"]  # type: ignore[index]
    assert set(chart_item["properties"]) == set(crd_item["properties"])
    assert chart_item["additionalProperties"] is False  # an `apiKey: sk-...` value is refused
    assert not any(k.lower() == "key" or k.lower().endswith("apikey") for k in chart_item["properties"])


def test_autoscaling_values_match_the_crd() -> None:
    import yaml

    crd = yaml.safe_load((ROOT / "crds" / "voicepipeline.yaml").read_text(encoding="utf-8"))
    crd_auto = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "autoscaling"
    ]
    chart_auto = _schema()["properties"]["pipeline"]["properties"]["autoscaling"]  # type: ignore[index]
    for key, rule in chart_auto["properties"].items():
        assert key in crd_auto["properties"], f"autoscaling.{key} is not in the CRD"
        for field in ("type", "minimum", "maximum"):
            assert rule.get(field) == crd_auto["properties"][key].get(field), f"autoscaling.{key}.{field}"
