"""The container images, checked statically (no Docker engine here): stages, non-root user, the
commands they run exist in the CLI, and the chart, the operator and `make images` name the same images."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from voice_operator import manifests
from voice_pipeline import contract as c
from voice_pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
CHART = ROOT / "charts" / "voice-pipeline"
IMAGES = {"services": DOCKER / "Dockerfile.services", "operator": DOCKER / "Dockerfile.operator"}
CHART_UID = 10001  # runAsUser of the chart's operator, cleanup and test Pods


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def parses(argv: list[str]) -> bool:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        return False
    return callable(getattr(args, "func", None))


def cli_invocations(run: str) -> list[list[str]]:
    """Every `voice-pipeline ...` command in a RUN line (split on shell separators)."""
    found = []
    for part in re.split(r"&&|\|\||;|\bthen\b|\)", run):
        words = part.split()
        if "voice-pipeline" in words:
            argv = words[words.index("voice-pipeline") + 1 :]
            found.append([w for w in argv if w not in ("--help", ">/dev/null")])
    return found


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_and_non_root(image: str) -> None:
    parts = stages(IMAGES[image])
    assert len(parts) >= 2, "build tools stay in a build stage"
    assert all(" AS " in f" {p[0][1]} ".upper() for p in parts), "every stage is named"
    final = parts[-1]
    users = [args for ins, args in final if ins == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER, so runAsNonRoot can verify it"
    assert int(uid) == CHART_UID
    copies = [args for ins, args in final if ins == "COPY"]
    assert copies and all("--from=" in a for a in copies), "the runtime stage only copies build results"
    assert not any("build-essential" in a for ins, a in final if ins == "RUN"), "no compilers at runtime"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_entrypoint_and_commands_exist_in_the_cli(image: str) -> None:
    final = stages(IMAGES[image])[-1]
    entry = json.loads(next(a for ins, a in final if ins == "ENTRYPOINT"))
    cmd = json.loads(next(a for ins, a in final if ins == "CMD"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["voice-pipeline"] and "voice-pipeline" in scripts
    assert parses(cmd), cmd
    runs = [a for ins, a in instructions(IMAGES[image]) if ins == "RUN"]
    invocations = [argv for run in runs for argv in cli_invocations(run)]
    assert invocations, "the image build exercises the CLI"
    for argv in invocations:
        argv = ["whisper-base" if w.startswith("$") else w for w in argv]
        assert parses(argv), f"{image}: `voice-pipeline {' '.join(argv)}` is not a CLI command"


def test_services_image_bakes_models_with_the_project_installer() -> None:
    text = IMAGES["services"].read_text()
    assert "voice-pipeline models install" in text and "voice-pipeline models verify" in text
    final = stages(IMAGES["services"])[-1]
    env = " ".join(a for ins, a in final if ins == "ENV")
    assert "VP_MODELS_DIR=/models" in env
    assert any("--from=models" in a and "/models" in a for ins, a in final if ins == "COPY")


def test_images_install_only_their_extras() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = {"services": {"services", "sensevoice"}, "operator": {"operator"}}
    for image, path in IMAGES.items():
        installed = re.findall(r'pip install [^"\n]*"\.\[([a-z,]+)\]"', path.read_text())
        assert installed, image
        names = set(installed[0].split(","))
        assert names == wanted[image] and names <= set(extras)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_build_context_holds_what_the_image_copies(image: str) -> None:
    ignore = (DOCKER / f"Dockerfile.{image}.dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for ins, args in instructions(IMAGES[image]):
        if ins == "COPY" and "--from=" not in args:
            *sources, _ = args.split()
            for source in sources:
                if not re.search(r"[\[*?]", source):  # a glob may match nothing (optional inputs)
                    assert (ROOT / source).exists(), source
                parts = Path(source.rstrip("/")).parts
                assert any("/".join(parts[:n]) in allowed for n in range(1, len(parts) + 1)), (
                    f"{source} is excluded by the .dockerignore"
                )


def test_chart_operator_and_make_images_name_the_same_images() -> None:
    mk = (ROOT / "mk" / "images.mk").read_text()
    var = dict(re.findall(r"^(IMAGE_REGISTRY|IMAGE_TAG) \?= (\S+)$", mk, re.M))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert var["IMAGE_TAG"] == version == chart["appVersion"]
    assert values["image"]["services"] == f"{var['IMAGE_REGISTRY']}/services:{var['IMAGE_TAG']}"
    assert values["image"]["operator"] == f"{var['IMAGE_REGISTRY']}/operator:{var['IMAGE_TAG']}"
    assert values["image"]["services"] == manifests.DEFAULT_IMAGE
    assert "docker/Dockerfile.services" in mk and "docker/Dockerfile.operator" in mk


def test_stage_deployments_run_commands_of_the_services_image() -> None:
    for stage in c.STAGES:
        assert parses(["serve", stage]), f"`voice-pipeline serve {stage}` (the operator's Deployment command)"


def test_operator_image_needs_no_model_runtime() -> None:
    """The operator image installs only the `operator` extra: its commands must import without any
    model runtime or web server (imports of those are refused here)."""
    blocked = ["numpy", "onnxruntime", "faster_whisper", "ctranslate2", "fastapi", "uvicorn", "piper",
               "llama_cpp", "av", "soxr", "opuslib", "redis", "edge_tts", "funasr_onnx", "websockets"]  # fmt: skip
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked for the operator image: " + name)
sys.meta_path.insert(0, Block())
from voice_pipeline.cli import build_parser
import voice_operator.handlers, voice_operator.cleanup, voice_operator.reconcile
p = build_parser()
for argv in (["operator", "-n", "x", "--standalone"], ["cleanup", "-n", "x"], ["plan", "--devices", "20"]):
    assert callable(p.parse_args(argv).func), argv
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT / "operator")])}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_make_images_says_it_needs_a_docker_engine() -> None:
    """With DOCKER_HOST pointing nowhere `make images` stops at once with a clear message (it starts
    a local engine only when DOCKER_HOST is unset; scripts/docker-engine.sh)."""
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    result = subprocess.run(
        ["make", "-s", "images"], cwd=ROOT, capture_output=True, text=True, env=env, check=False, timeout=60
    )
    assert result.returncode != 0
    assert "a Docker engine is needed" in result.stdout + result.stderr, shlex.join(result.args)
    assert "DOCKER_HOST=unix:///nonexistent/docker.sock does not answer" in result.stdout + result.stderr
