"""Where the project keeps data outside the repository (models, downloads, built binaries).

Everything slow to produce is cached under VP_HOME (default ~/.cache/voice-pipeline), keyed by
version inside, so a second run on the same machine is fast and the repository stays small.
"""

from __future__ import annotations

import os
from pathlib import Path


def vp_home() -> Path:
    return Path(os.environ.get("VP_HOME") or Path.home() / ".cache" / "voice-pipeline").expanduser()


def models_dir() -> Path:
    """Assembled models: <models_dir>/<model-name>/<files>."""
    return Path(os.environ.get("VP_MODELS_DIR") or vp_home() / "models").expanduser()


def downloads_dir() -> Path:
    return vp_home() / "downloads"


def wheels_dir() -> Path:
    """Wheels compiled once from sdists (llama-cpp-python), reused by every later install."""
    return vp_home() / "wheels"


def bin_dir() -> Path:
    """Binaries the project builds or extracts (kube-apiserver, helm), keyed by version inside."""
    return vp_home() / "bin"
