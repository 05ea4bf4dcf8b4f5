"""The storage node's configuration file (JSON) and its series-selection rules.

Example (every key but ``destination`` has a default)::

    {
      "ae_title": "BRAINBARRIERS", "host": "0.0.0.0", "port": 11112,
      "work_dir": "brainbarriers-node",
      "quiet_seconds": 30,
      "model": "brainbarriers-demo", "device": "auto", "threads": null,
      "outputs": ["seg", "rtstruct"],
      "destination": {"ae_title": "PACS", "host": "10.0.0.5", "port": 104},
      "allowed_callers": null,
      "min_slices": 16, "send_attempts": 5, "retry_seconds": 60,
      "series_rules": {
        "ct": {"modality": "CT", "include": "", "exclude": "scout|locali[sz]er|topogram|bone"},
        "t1": {"modality": "MR", "include": "t1", "exclude": "t2|flair|locali[sz]er|scout"},
        "t2": {"modality": "MR", "include": "t2|flair", "exclude": "locali[sz]er|scout"}
      }
    }

A series is a candidate for a role when its Modality equals the rule's modality, its Series
Description matches ``include`` (case-insensitive regular expression searched anywhere; empty
matches all) and does not match ``exclude``, and it has at least ``min_slices`` instances. When
several series fit one role, the one with most instances wins; a series fills one role at most
(CT, then T1, then T2).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..structures import MODALITIES

DEFAULT_RULES = {
    "ct": {"modality": "CT", "include": "", "exclude": "scout|locali[sz]er|topogram|bone"},
    "t1": {"modality": "MR", "include": "t1", "exclude": "t2|flair|locali[sz]er|scout"},
    "t2": {"modality": "MR", "include": "t2|flair", "exclude": "locali[sz]er|scout"},
}
OUTPUT_CHOICES = ("seg", "rtstruct")


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class SeriesRule:
    modality: str
    include: re.Pattern
    exclude: re.Pattern | None

    def matches(self, modality: str, description: str) -> bool:
        if modality.upper() != self.modality.upper():
            return False
        if not self.include.search(description):
            return False
        return not (self.exclude is not None and self.exclude.search(description))


@dataclass
class NodeConfig:
    destination: Destination
    ae_title: str = "BRAINBARRIERS"
    host: str = "0.0.0.0"
    port: int = 11112
    work_dir: Path = Path("brainbarriers-node")
    quiet_seconds: float = 30.0
    model: str = "brainbarriers-demo"
    device: str = "auto"
    threads: int | None = None
    outputs: tuple[str, ...] = OUTPUT_CHOICES
    allowed_callers: tuple[str, ...] | None = None
    min_slices: int = 16
    send_attempts: int = 5
    retry_seconds: float = 60.0
    rules: dict[str, SeriesRule] = field(default_factory=dict)


def _ae_title(value, where: str) -> str:
    if not isinstance(value, str) or not (1 <= len(value.strip()) <= 16):
        raise InputError(f"{where}: an AE title of 1-16 characters is needed, got {value!r}")
    return value.strip()


def _port(value, where: str) -> int:
    if not isinstance(value, int) or not (0 < value < 65536):
        raise InputError(f"{where}: a port number 1-65535 is needed, got {value!r}")
    return value


def _regex(text, where: str) -> re.Pattern:
    if not isinstance(text, str):
        raise InputError(f"{where}: a regular expression string is needed")
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise InputError(f"{where}: bad regular expression {text!r} ({exc})") from None


def parse_config(data: dict, base: Path = Path(".")) -> NodeConfig:
    """A checked NodeConfig from the parsed JSON (InputError with one line on any problem)."""
    if not isinstance(data, dict):
        raise InputError("the node configuration must be a JSON object")
    known = {"ae_title", "host", "port", "work_dir", "quiet_seconds", "model", "device", "threads", "outputs",
             "destination", "allowed_callers", "min_slices", "series_rules", "send_attempts", "retry_seconds"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown configuration keys {unknown}; known: {sorted(known)}")
    dest = data.get("destination")
    if not isinstance(dest, dict):
        raise InputError("configuration: 'destination' {ae_title, host, port} is required")
    destination = Destination(_ae_title(dest.get("ae_title"), "destination.ae_title"), str(dest.get("host", "")),
                              _port(dest.get("port"), "destination.port"))
    if not destination.host:
        raise InputError("destination.host is required")
    outputs = tuple(data.get("outputs", OUTPUT_CHOICES))
    if not outputs or any(o not in OUTPUT_CHOICES for o in outputs):
        raise InputError(f"outputs must be a non-empty list of {list(OUTPUT_CHOICES)}, got {list(outputs)}")
    rules_data = {**DEFAULT_RULES, **(data.get("series_rules") or {})}
    rules = {}
    for role, rule in rules_data.items():
        if role not in MODALITIES or not isinstance(rule, dict):
            raise InputError(f"series_rules: roles are {list(MODALITIES)}, each an object; got {role!r}")
        exclude = rule.get("exclude") or None
        rules[role] = SeriesRule(str(rule.get("modality", "")), _regex(rule.get("include", ""), f"series_rules.{role}.include"),
                                 _regex(exclude, f"series_rules.{role}.exclude") if exclude else None)
    quiet = data.get("quiet_seconds", 30.0)
    if not isinstance(quiet, (int, float)) or quiet < 0:
        raise InputError(f"quiet_seconds must be a number >= 0, got {quiet!r}")
    callers = data.get("allowed_callers")
    work_dir = Path(str(data.get("work_dir", "brainbarriers-node"))).expanduser()
    return NodeConfig(
        destination=destination,
        ae_title=_ae_title(data.get("ae_title", "BRAINBARRIERS"), "ae_title"),
        host=str(data.get("host", "0.0.0.0")),
        port=_port(data.get("port", 11112), "port"),
        work_dir=work_dir if work_dir.is_absolute() else base / work_dir,
        quiet_seconds=float(quiet),
        model=str(data.get("model", "brainbarriers-demo")),
        device=str(data.get("device", "auto")),
        threads=data.get("threads"),
        outputs=outputs,
        allowed_callers=tuple(_ae_title(c, "allowed_callers") for c in callers) if callers else None,
        min_slices=int(data.get("min_slices", 16)),
        send_attempts=max(1, int(data.get("send_attempts", 5))),
        retry_seconds=float(data.get("retry_seconds", 60.0)),
        rules=rules,
    )


def load_config(path: str | Path) -> NodeConfig:
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"configuration {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"configuration {path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"configuration {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_config(data, path.resolve().parent)


@dataclass(frozen=True)
class SeriesInfo:
    uid: str
    modality: str
    description: str
    count: int
    folder: Path


def pick_series(series: list[SeriesInfo], rules: dict[str, SeriesRule], min_slices: int) -> dict[str, SeriesInfo]:
    """Role -> chosen series (CT, then T1, then T2; the largest matching series; each series once)."""
    chosen: dict[str, SeriesInfo] = {}
    used: set[str] = set()
    for role in MODALITIES:
        rule = rules.get(role)
        if rule is None:
            continue
        fits = [s for s in series if s.uid not in used and s.count >= min_slices and rule.matches(s.modality, s.description)]
        if fits:
            best = max(fits, key=lambda s: (s.count, s.uid))
            chosen[role] = best
            used.add(best.uid)
    return chosen
