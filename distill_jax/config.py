"""Typed configs: frozen dataclasses, YAML presets, dotted `key=value` overrides, resolved copies on disk.

Each stage declares its own frozen dataclass next to the code that reads it (one concern per module);
this module is the one machinery they all share. No JAX here: the teacher side loads configs too.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import platform
import re
import sys
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from distill_jax.fileio import write_text_atomic

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value, key or file is wrong; the message names the dotted key or the file.

    `key` is the dotted key at fault when there is one: `load` uses it to say where the value came from (the
    file and line, the command line, or the default). A dataclass's `__post_init__` may raise it with the
    field's name as `key`; `from_dict` prefixes the section."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def at_least(minimum: int | float) -> dict[str, Any]:
    """Field metadata: `from_dict` rejects a value below `minimum` (None, where allowed, means "no limit"),
    naming the key; `--help` shows the bound. `limit: int | None = field(default=None, metadata=at_least(1))`."""
    return {"min": minimum}


RUNTIME: dict[str, Any] = {"runtime": True}
"""Field metadata for a key that changes how a stage runs, never what it produces (progress bars, async
checkpointing, worker counts): stage fingerprints (methods/stages.py) leave it out, so changing it reruns nothing."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`, converting only where it is lossless (int -> float, list -> tuple)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}", key=where)
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(c) for c in get_args(tp))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}", key=where)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}", key=where)
        return from_dict(tp, value, prefix=where)
    if origin in (list, tuple, Iterable) or tp in (list, tuple):
        if isinstance(value, str) and origin is not None:
            # `styles=cot,pot` on the command line reads as one string: split it.
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}", key=where)
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item_tp = args[0]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}", key=where)
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        else:
            item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}", key=where)
        args = get_args(tp)
        vt = args[1] if args else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}", key=where)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}", key=where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads `1e-3` as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}", key=where)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}", key=where)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}", key=where)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a nested mapping, rejecting unknown keys with a did-you-mean hint."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(fields))})"
            raise ConfigError(f"unknown config key {where!r}{hint}", key=where)
        default = _field_default(fields[key])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # A partial section overrides its default section key by key instead of replacing it whole.
            value = _deep_merge(to_dict(default), value)
        kwargs[key] = _coerce(value, hints[key], where)
        minimum = fields[key].metadata.get("min")
        if minimum is not None and kwargs[key] is not None and kwargs[key] < minimum:
            raise ConfigError(f"{where} must be >= {minimum}, got {kwargs[key]!r}", key=where)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        keys = [(prefix + "." if prefix else "") + m for m in missing]
        raise ConfigError(f"missing config key(s): {', '.join(keys)}", key=keys[0])
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # a __post_init__ check
        key = getattr(e, "key", None)
        key = (f"{prefix}.{key}" if prefix else key) if key else (prefix or None)
        raise ConfigError(f"{prefix or cls.__name__}: {e}", key=key) from e


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(cfg: Any) -> Any:
    """Plain nested dicts/lists, ready for YAML or JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings; values are parsed as YAML scalars/lists (`3`, `1e-3`, `[cot, pot]`, `null`)."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse value: {e}") from e
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    return _read_yaml(path)[0]


def _read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's mapping, and the line of every dotted key in it (for errors that name the file's line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                dotted = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[dotted] = k.start_mark.line + 1
                walk(v, dotted)

    walk(root, "")
    return data, lines


def _related(a: str, b: str) -> bool:
    """One dotted key is the other or a section holding it."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _blame(error: ConfigError, path: str | Path | None, lines: dict[str, int], overrides: list[str]) -> str:
    """`error` prefixed with where its key's value came from: the command line, the file's line, or the default."""
    if error.key is None:
        return f"{path}: {error}" if path else str(error)
    key = re.sub(r"\[\d+\]", "", error.key)  # styles[1] -> styles
    given = [item for item in overrides if _related(item.split("=", 1)[0].strip(), key)]
    if given:
        return f"command line {' '.join(given)}: {error}"
    in_file = [k for k in lines if _related(k, key) and len(k) >= len(key)]
    if in_file:
        return f"{path}:{lines[min(in_file, key=len)]}: {error}"
    source = f"neither {path} nor the command line sets it" if path else "not set on the command line"
    return f"{error} ({key} is the default: {source})"


def load(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = (),
         check: Callable[[T], None] | None = None) -> T:
    """Defaults <- YAML file <- dotted overrides, checked against `cls`, then by `check` (checks that need
    more than one key or the machine: sizes against the device count, problem files that must not be empty).
    An error names its key and where the value came from: `FILE:LINE`, `command line KEY=VALUE`, or the default."""
    data, lines = _read_yaml(path) if path else ({}, {})
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    try:
        cfg = from_dict(cls, data)
        if check is not None:
            check(cfg)
    except ConfigError as e:
        raise ConfigError(_blame(e, path, lines, overrides), key=e.key) from e
    return cfg


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("distill_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "transformers", "sympy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_resolved(cfg: Any, path: str | Path, **extra: Any) -> None:
    """Write the fully resolved config plus package versions (and `extra`, e.g. the stages it ran), so a run
    directory says how it was made."""
    doc = {"config": to_dict(cfg), "versions": _versions(), **extra}
    write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False))


def load_resolved(cls: type[T], path: str | Path) -> T:
    """Read back a config written by `save_resolved`."""
    doc = load_yaml(path)
    return from_dict(cls, doc.get("config", doc))


__all__ = [
    "ConfigError", "RUNTIME", "at_least", "from_dict", "to_dict", "apply_overrides", "load_yaml", "load",
    "save_resolved", "load_resolved",
]
