"""No import cycles in the services package, and the stages do not know how they are hosted."""

from __future__ import annotations

from voice_pipeline.contract import MODEL_STAGES
from voice_pipeline.stagehost.services import STAGE_SERVICES

from .import_graph import cycles, module_edges, package_edges

# What a model stage's package may import: shared code, the contract and the model installer.
# Hosting (stagehost, transport), building (assembly), caching (cache) and the conversation
# (gateway, turn) wrap a stage from outside.
STAGE_MAY_IMPORT = {"common", "contract", "models", "voice_pipeline"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_package_imports_another_that_imports_it_back() -> None:
    assert cycles(package_edges(module_edges())) == []


def test_no_module_cycle() -> None:
    assert cycles(module_edges()) == []


def test_model_stages_import_only_shared_code() -> None:
    packages = package_edges(module_edges())
    beyond = {stage: sorted(packages.get(stage, set()) - STAGE_MAY_IMPORT) for stage in MODEL_STAGES}
    assert beyond == {stage: [] for stage in MODEL_STAGES}


def test_the_stage_services_are_the_contract_model_stages() -> None:
    assert tuple(STAGE_SERVICES) == MODEL_STAGES
    assert all(name == spec.name for name, spec in STAGE_SERVICES.items())
