"""Presets: YAML files next to this module, validated by the pydantic models in `schema`.

`load_config("tiny")` reads `configs/tiny.yaml`; any other argument is a path. A preset
may start from another (`extends: tiny`) and state only what it changes, and a command line
may change a few keys on top (`--set bank.n=16`). A typo or a bad value raises
`ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ttscale.configs.schema import PipelineConfig

PRESET_DIR = Path(__file__).parent
DEFAULT_PRESET = "tiny"


class ConfigError(ValueError):
    pass


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name_or_path: str) -> Path:
    if name_or_path in presets():
        return PRESET_DIR / f"{name_or_path}.yaml"
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"no preset named {name_or_path!r} and no such file (presets: {', '.join(presets())})")
    return path


def parse_config(data: Any, source: str) -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(part) for part in e["loc"]) or "(top level)"
            msg = "unknown key (typo?)" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"{source}: {key}: {msg}")
        raise ConfigError("invalid config\n  " + "\n  ".join(lines)) from None


def _settings(name_or_path: str, seen: tuple[Path, ...] = ()) -> tuple[Any, Path]:
    """A preset's settings, written over the preset it names in `extends:` (so a variant states only
    what it changes)."""
    path = preset_path(name_or_path)
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `extends` loops back to itself ({' -> '.join(str(p) for p in seen)})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if isinstance(data, dict) and "extends" in data:
        parent = data.pop("extends")
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: extends: expected a preset name or a path")
        base, _ = _settings(parent, (*seen, path.resolve()))
        data = overlay(base, data)
    return data, path


def load_config(name_or_path: str = DEFAULT_PRESET, overrides: Sequence[str] = ()) -> PipelineConfig:
    """A preset, with `--set KEY=VALUE` overrides (dotted keys, YAML values) written over it."""
    data, path = _settings(name_or_path)
    source = str(path) + (f" with --set {' '.join(overrides)}" if overrides else "")
    return parse_config(overlay(data, parse_overrides(overrides)) if overrides else data, source)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`["bank.n=16", "task.kind=gsm8k"]` as nested settings: `{"bank": {"n": 16}, "task": {"kind": "gsm8k"}}`.
    Values are read as YAML (`16` a number, `[a, b]` a list, `null` none); the config's validation
    then checks them like the file's."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. --set bank.n=16")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err})") from None
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} was already set to a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


def overlay(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` written over it, section by section (a deployment's overrides over a preset)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = overlay(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
