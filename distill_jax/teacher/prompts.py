"""Versioned teacher prompt templates, loaded from the YAML files in prompt_files/ (one file per template).

Prompts are data, not code: each file holds a name, a version, the style of what the teacher writes, a
system text, a user template with `{field}` slots and few-shot exemplars (the exemplars were written for this
project). A template renders to chat messages: system, then one user/assistant pair per exemplar, then the
user turn for the question. `prompt_version` (`name@vN#hash`) goes into every record and the request's cache
key; the hash is over the template's content, so editing a prompt changes it even when the version is not
bumped, and reformatting the YAML file does not.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

PROMPT_DIR = Path(__file__).parent / "prompt_files"
_SLOT = re.compile(r"\{([a-z_]+)\}")


class PromptError(ValueError):
    """A prompt file is malformed or a render lacks a field; the message names the file or template."""


@dataclass(frozen=True)
class Exemplar:
    fields: tuple[tuple[str, str], ...]  # the inputs the user template needs, e.g. (("question", "..."),)
    output: str  # what the teacher should write for them

    def field_dict(self) -> dict[str, str]:
        return dict(self.fields)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    style: str  # the style whose format the output follows ("problem" for FDD question generation)
    system: str
    user: str
    exemplars: tuple[Exemplar, ...]

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_SLOT.findall(self.user)))

    @property
    def content_hash(self) -> str:
        doc = {
            "name": self.name, "version": self.version, "style": self.style, "system": self.system,
            "user": self.user, "exemplars": [[list(map(list, e.fields)), e.output] for e in self.exemplars],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    @property
    def prompt_version(self) -> str:
        return f"{self.name}@v{self.version}#{self.content_hash[:12]}"

    def user_text(self, fields: Mapping[str, Any]) -> str:
        missing = [s for s in self.slots if s not in fields]
        if missing:
            raise PromptError(f"prompt {self.name!r}: render needs field(s) {', '.join(missing)}")
        # Plain substitution, not str.format: questions and programs contain braces of their own.
        return _SLOT.sub(lambda m: str(fields[m.group(1)]) if m.group(1) in fields else m.group(0), self.user)

    def render(self, **fields: Any) -> tuple[dict[str, str], ...]:
        """Chat messages for one request: system, the exemplars as user/assistant turns, the question."""
        messages = [{"role": "system", "content": self.system}]
        for ex in self.exemplars:
            messages.append({"role": "user", "content": self.user_text(ex.field_dict())})
            messages.append({"role": "assistant", "content": ex.output})
        messages.append({"role": "user", "content": self.user_text(fields)})
        return tuple(messages)


def _require(doc: dict, key: str, kind: type, where: str) -> Any:
    if key not in doc:
        raise PromptError(f"{where}: missing key {key!r}")
    if not isinstance(doc[key], kind):
        raise PromptError(f"{where}: {key!r} must be a {kind.__name__}, got {type(doc[key]).__name__}")
    return doc[key]


def parse_template(doc: dict, where: str) -> PromptTemplate:
    if not isinstance(doc, dict):
        raise PromptError(f"{where}: top level must be a mapping")
    name = _require(doc, "name", str, where)
    user = _require(doc, "user", str, where)
    slots = set(_SLOT.findall(user))
    exemplars = []
    for i, raw in enumerate(doc.get("exemplars") or []):
        ex_where = f"{where}: exemplars[{i}]"
        if not isinstance(raw, dict):
            raise PromptError(f"{ex_where}: must be a mapping")
        output = _require(raw, "output", str, ex_where)
        fields = {k: str(v).strip() for k, v in raw.items() if k != "output"}
        if set(fields) != slots:
            raise PromptError(f"{ex_where}: fields {sorted(fields)} do not match the user template's {sorted(slots)}")
        exemplars.append(Exemplar(tuple(sorted(fields.items())), output.strip()))
    return PromptTemplate(
        name=name,
        version=int(_require(doc, "version", int, where)),
        style=_require(doc, "style", str, where),
        system=_require(doc, "system", str, where).strip(),
        user=user.strip(),
        exemplars=tuple(exemplars),
    )


def load_template_file(path: str | Path) -> PromptTemplate:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PromptError(f"{path}: cannot read prompt file: {e}") from e
    template = parse_template(doc, str(path))
    if template.name != path.stem:
        raise PromptError(f"{path}: name {template.name!r} differs from the file name")
    return template


@lru_cache(maxsize=None)
def load_templates(prompt_dir: str | None = None) -> dict[str, PromptTemplate]:
    """Every template in `prompt_dir` (default: the packaged prompt_files/), by name."""
    folder = Path(prompt_dir) if prompt_dir else PROMPT_DIR
    templates = {}
    for path in sorted(folder.glob("*.yaml")):
        t = load_template_file(path)
        templates[t.name] = t
    if not templates:
        raise PromptError(f"{folder}: no prompt files (*.yaml)")
    return templates


def get_template(name: str, prompt_dir: str | None = None) -> PromptTemplate:
    templates = load_templates(prompt_dir)
    if name not in templates:
        raise PromptError(f"no prompt template {name!r} (known: {', '.join(sorted(templates))})")
    return templates[name]


# Which templates a style's teacher request uses, in order (decomposition plans, then solves).
STYLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "cot": ("cot",),
    "pot": ("pot",),
    "eot": ("eot",),
    "kp_cot": ("kp_cot",),
    "kp_pot": ("kp_pot",),
    "dss": ("dss",),
    "decomp": ("decomp_plan", "decomp_solve"),
}
FDD_TEMPLATES = {"harder": "fdd_harder", "similar": "fdd_similar"}


def templates_for_style(style: str, prompt_dir: str | None = None) -> tuple[PromptTemplate, ...]:
    if style not in STYLE_TEMPLATES:
        raise PromptError(f"no teacher prompt for style {style!r} (known: {', '.join(STYLE_TEMPLATES)})")
    return tuple(get_template(n, prompt_dir) for n in STYLE_TEMPLATES[style])


def prompt_version(style: str, prompt_dir: str | None = None) -> str:
    """The version string recorded for a style: the versions of all templates it uses, joined by '+'."""
    return "+".join(t.prompt_version for t in templates_for_style(style, prompt_dir))
