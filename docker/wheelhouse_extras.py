"""Requirements a wheelhouse lacks for another Python than the one that resolved it.

`pip wheel` evaluates environment markers for the host's interpreter; the image's may differ
(Debian bookworm's python3.11 is 3.11.2, so redis needs `async-timeout; python_full_version <
"3.11.3"`, which a newer host skips). This prints, one per line, every requirement of the
wheelhouse's wheels that applies under the target version and that no wheel there satisfies;
mk/images.mk adds them with `pip wheel`.

    python docker/wheelhouse_extras.py WHEELHOUSE_DIR TARGET_PYTHON_VERSION
"""

from __future__ import annotations

import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def main(directory: str, version: str) -> int:
    env = {**default_environment(), "python_full_version": version, "python_version": ".".join(version.split(".")[:2]), "extra": ""}
    present = {}
    requires: list[str] = []
    for wheel in sorted(Path(directory).glob("*.whl")):
        name, ver, _, _ = parse_wheel_filename(wheel.name)
        present[canonicalize_name(name)] = ver
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            requires += Parser().parsestr(zf.read(meta).decode()).get_all("Requires-Dist") or []
    missing = set()
    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate(env):  # type: ignore[arg-type]
            continue
        have = present.get(canonicalize_name(req.name))
        if have is None or not req.specifier.contains(have, prereleases=True):
            missing.add(f"{req.name}{req.specifier}")
    print("\n".join(sorted(missing)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
