"""The dotted keys of a config dataclass, read from the dataclasses themselves: each key's type, default, bound
and source comment (what `distill-jax VERB --help` lists), and a config's values by dotted key (what the stage
fingerprints of methods/stages.py record). No JAX here.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, get_type_hints

from distill_jax.config import to_dict

REQUIRED = "(required)"  # the default shown for a key without one


@dataclass(frozen=True)
class Key:
    name: str  # dotted: train.optim.learning_rate
    type: str
    default: Any  # REQUIRED when the key has none
    comment: str  # the field's comment in the source ("" when it has none)
    runtime: bool  # how a stage runs, never what it produces (config.RUNTIME): fingerprints leave it out
    minimum: Any = None  # config.at_least


def keys(cls: type, prefix: str = "") -> list[Key]:
    """Every leaf key of `cls` (sections expanded), with the defaults a config file that omits it gets."""
    return _walk(cls, prefix, None, False)


def _walk(cls: type, prefix: str, default_section: Any, runtime: bool) -> list[Key]:
    hints = get_type_hints(cls)
    comments = _comments(cls)
    out: list[Key] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = prefix + f.name
        if default_section is not None:
            default = getattr(default_section, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        is_runtime = runtime or bool(f.metadata.get("runtime"))
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            # a section: its keys' defaults are those of this field's default section (MethodConfig's
            # `train` defaults to steps=1, TrainConfig's own `steps` to None)
            out += _walk(tp, name + ".", default if dataclasses.is_dataclass(default) else None, is_runtime)
            continue
        out.append(Key(name, _type_name(tp), to_dict(default), comments.get(f.name, ""), is_runtime,
                       f.metadata.get("min")))
    return out


def values(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A config's leaf values by dotted key, as plain data (the same keys as `keys(type(cfg))`)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(values(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = to_dict(value)
    return out


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) if isinstance(tp, type) else None
    return text or str(tp).replace("typing.", "").replace("NoneType", "None")


@lru_cache(maxsize=None)
def _comments(cls: type) -> dict[str, str]:
    """field -> its trailing comment, or the comment lines right above it; base classes first."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (a zipped install): keys are listed without comments
            continue
        lines = source.splitlines()
        trailing = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
        node = ast.parse(source).body[0]
        previous = node.lineno
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                above = [lines[i - 1].strip().lstrip("#").strip() for i in range(previous + 1, item.lineno)
                         if lines[i - 1].strip().startswith("#")]
                text = " ".join(above + [trailing.get(item.end_lineno or item.lineno, "")]).strip()
                if text:
                    out[item.target.id] = text
            previous = item.end_lineno or item.lineno
    return out


def describe(cls: type, width: int = 118) -> str:
    """The `--help` listing: one line per dotted key with its default, type, bound and comment."""
    rows = keys(cls)
    name_w = min(max(len(k.name) for k in rows), 40)
    lines = ["config keys (in the --config YAML, or as dotted key=value arguments, e.g. train.steps=200):"]
    for k in rows:
        default = "(required)" if k.default == REQUIRED else repr(k.default)
        if len(default) > 40:
            default = default[:37] + "..."
        bound = f", >= {k.minimum}" if k.minimum is not None else ""
        head = f"  {k.name.ljust(name_w)} = {default}  [{k.type}{bound}]"
        text = f"{head}  {k.comment}" if k.comment else head
        lines.append(text if len(text) <= width else text[: width - 3] + "...")
    return "\n".join(lines)


__all__ = ["Key", "REQUIRED", "keys", "values", "describe"]
