"""Reading the simulator's settings dataclasses from a mapping or a YAML file."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml


class SettingsFile:
    """``from_mapping`` / ``from_yaml`` for a settings dataclass; an unknown key is named.

    ``KIND`` names the settings in the error ("unknown campaign setting(s): ...").
    """

    KIND = "simulator"

    @classmethod
    def from_mapping(cls, values: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.KIND} setting(s): {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path):
        with open(path) as stream:
            return cls.from_mapping(yaml.safe_load(stream) or {})
