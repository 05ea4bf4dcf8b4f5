"""Training configuration: JSON files in training/configs/, merged over the paper's defaults.

A config file names only what it changes; ``load_config`` deep-merges it over ``paper.json``
(the paper's recipe) so every recipe has every key. ``--set a.b=value`` overrides single keys
from the command line (the value is parsed as JSON when it can be).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config file or override is invalid (reported as a one-line error)."""


def deep_merge(base: dict, update: dict) -> dict:
    """A copy of ``base`` with ``update`` merged in (dicts merge recursively, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a JSON object")
    return data


def resolve_config_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    candidate = CONFIG_DIR / (p.name if p.suffix == ".json" else f"{p.name}.json")
    if candidate.is_file():
        return candidate
    known = sorted(q.stem for q in CONFIG_DIR.glob("*.json"))
    raise ConfigError(f"no config {str(name_or_path)!r} (a file, or one of {known})")


def set_key(config: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = config
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def load_config(name_or_path: str | Path = "paper", overrides: list[str] | None = None) -> dict:
    """Load a recipe merged over paper.json, then apply ``key=value`` overrides."""
    base = _read(CONFIG_DIR / "paper.json")
    path = resolve_config_path(name_or_path)
    config = base if path.resolve() == (CONFIG_DIR / "paper.json").resolve() else deep_merge(base, _read(path))
    for text in overrides or []:
        key, value = parse_override(text)
        set_key(config, key, value)
    config["_source"] = str(path)
    return config


def stage_config(config: dict, stage: str) -> dict:
    """The settings of one stage ("coarse" or "fine"): shared ``train`` settings merged with the stage's."""
    return deep_merge(config["train"], config.get(stage, {}))
