"""The one writer of docs/benchmarks.md: each benchmark replaces only its own marked section.

Sections sit between `<!-- NAME:begin -->` and `<!-- NAME:end -->`; the file is re-read right before writing
(several benchmarks share it) and replaced atomically.
"""
from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_HEADER = "# Benchmarks\n\nMeasured speeds of distill_jax parts, each section written by the benchmark script it names.\n"


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else _HEADER
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_name(doc.name + f".{name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(doc)
