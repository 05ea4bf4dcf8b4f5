"""Loading, overriding and saving training recipes (the typed recipe itself: ``training.recipe``).

A recipe file in training/configs/ names only what it changes from the defaults (the paper's
recipe, defined once in ``training.recipe``). ``--set a.b=value`` overrides single keys from the
command line (the value is parsed as JSON when it can be); overrides are validated like the file.
The recipe a run used is saved as ``recipe.json`` in its folders and read back by ``export``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

from .recipe import ConfigError, Recipe, check_modalities, check_patches, deep_merge

__all__ = ["CONFIG_DIR", "RECIPE_FILE", "ConfigError", "Recipe", "as_recipe", "deep_merge", "load_config",
           "load_recipe", "parse_override", "read_recipe", "resolve_config_path", "save_recipe", "stage_config"]

CONFIG_DIR = Path(__file__).parent / "configs"
RECIPE_FILE = "recipe.json"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a JSON object")
    return data


def resolve_config_path(name_or_path: Union[str, Path]) -> Path:
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


def as_recipe(config: Union[Recipe, dict], source: str = "recipe") -> Recipe:
    """``config`` as a validated Recipe (a dict is checked key by key and completed with defaults)."""
    if isinstance(config, Recipe):
        return config
    recipe = Recipe.from_dict({k: v for k, v in config.items() if k != "_source"}, source)
    check_modalities(recipe, source)
    check_patches(recipe, source)
    return recipe


def load_recipe(name_or_path: Union[str, Path] = "paper", overrides: list[str] | None = None) -> Recipe:
    """The recipe ``name_or_path`` (a name in training/configs or a JSON file) over the defaults,
    then ``key=value`` overrides; every key and value is validated (``ConfigError`` otherwise)."""
    path = resolve_config_path(name_or_path)
    data = _read(path)
    as_recipe(data, str(path))  # the file alone, so its errors name the file
    for text in overrides or []:
        key, value = parse_override(text)
        set_key(data, key, value)
        as_recipe(data, f"--set {text}")
    return as_recipe(data, str(path))


def load_config(name_or_path: Union[str, Path] = "paper", overrides: list[str] | None = None) -> dict:
    """``load_recipe`` as a complete plain dict (the validated dict view the stage code reads)."""
    return load_recipe(name_or_path, overrides).to_dict()


def stage_config(config: Union[Recipe, dict], stage: str) -> dict:
    """The settings of one stage ("coarse" or "fine"): shared ``train`` settings merged with the stage's."""
    return as_recipe(config).stage_dict(stage)


def save_recipe(config: Union[Recipe, dict], folder: Path) -> Path:
    """Write the complete recipe into ``folder/recipe.json`` (atomically) and return the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RECIPE_FILE
    tmp = path.with_name(f"{RECIPE_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(as_recipe(config).to_dict(), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_recipe(folder: Path) -> Recipe:
    """The recipe saved in ``folder/recipe.json`` (validated)."""
    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RECIPE_FILE} in {folder} (was it trained with this version?)")
    return as_recipe(_read(path), str(path))
