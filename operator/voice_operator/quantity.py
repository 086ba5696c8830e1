"""Kubernetes resource quantities <-> numbers (cores, MiB). Pure."""

from __future__ import annotations

import math
import re

_MEM_UNITS = {"": 1 / 2**20, "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20,
              "Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "Ti": 1024.0**2}  # fmt: skip
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


class QuantityError(ValueError):
    pass


def parse_cpu(value: str | int | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(value)
    if not match or match.group(2) not in ("", "m"):
        raise QuantityError(f"'{value}' is not a CPU quantity (examples: 4, 3.5, 3500m)")
    number = float(match.group(1))
    return number / 1000 if match.group(2) == "m" else number


def parse_memory_mib(value: str | int | float) -> float:
    if isinstance(value, int | float):
        return float(value) / 2**20
    match = _QUANTITY.match(value)
    if not match or match.group(2) not in _MEM_UNITS:
        raise QuantityError(f"'{value}' is not a memory quantity (examples: 16Gi, 512Mi)")
    return float(match.group(1)) * _MEM_UNITS[match.group(2)]


def format_cpu(cores: float) -> str:
    millis = math.ceil(cores * 1000 - 1e-9)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(mib: float) -> str:
    whole = math.ceil(mib - 1e-9)
    return f"{whole // 1024}Gi" if whole % 1024 == 0 and whole >= 1024 else f"{whole}Mi"
