"""`distill-jax generate`: decode a JSONL of questions (or ready inputs) with a student.

The student is a HF T5 directory (config.json + weights + tokenizer files) or a training run directory with
`--step` (latest when omitted). Each output row is the input row plus `output`: the decoded text, or a list
of texts with `--samples N` (N > 1). Any vocab works: only an input holding a character the tokenizer has no
token for stops the run, before decoding, naming the row, the character and the fix.
"""
from __future__ import annotations

import argparse
import sys

import jax

from distill_jax.config import ConfigError
from distill_jax.data.records import DataError, iter_jsonl, write_jsonl
from distill_jax.evaluate.student import decode_mesh, load_student
from distill_jax.model.decode import generate_texts
from distill_jax.model.tokenizer import SpellingError
from distill_jax.reasoning.styles import get_style, student_input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF T5 directory, or a training run directory")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a run directory (default latest)")
    parser.add_argument("--input", required=True, help="JSONL rows with `id` and `question` (or a ready `input`)")
    parser.add_argument("--output", required=True, help="JSONL to write: the input rows plus `output`")
    parser.add_argument("--style", default=None, help="format `question` as the student input of this style")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    decoding = parser.add_mutually_exclusive_group()
    decoding.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (> 1)")
    decoding.add_argument("--samples", type=int, default=0, help="sample this many outputs per input")
    parser.add_argument("--length-penalty", type=float, default=1.0, help="beam score / length ** this")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed for sampling")
    parser.add_argument("--no-progress", action="store_true")


def _read_inputs(path: str, style: str | None) -> tuple[list[dict], list[str], list[str]]:
    """(rows, student inputs, `file:line` of each)."""
    rows, texts, where = [], [], []
    if style is not None:
        try:
            get_style(style)
        except KeyError as e:
            raise ConfigError(f"--style: {e.args[0]}") from None
    for lineno, row in iter_jsonl(path):
        where.append(f"{path}:{lineno}")
        if "id" not in row:
            raise DataError(f"{where[-1]}: row has no `id`")
        if style is not None:
            if not isinstance(row.get("question"), str):
                raise DataError(f"{where[-1]}: --style {style} needs a string `question`")
            texts.append(student_input(row["question"], style))
        elif isinstance(row.get("input"), str):
            texts.append(row["input"])
        else:
            raise DataError(f"{where[-1]}: row has no string `input` (give --style to build it from `question`)")
        rows.append(row)
    return rows, texts, where


def run(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise ConfigError("--max-new-tokens and --batch-size must be >= 1")
    if args.samples < 0 or args.num_beams < 1:
        raise ConfigError("--samples must be >= 0 and --num-beams >= 1")
    try:
        rows, texts, where = _read_inputs(args.input, args.style)
    except (DataError, FileNotFoundError) as e:
        print(f"distill-jax generate: {e}", file=sys.stderr)
        return 2
    student = load_student(args.model, args.step, args.tokenizer)
    try:  # before any decoding: an input character the tokenizer lacks would be read as <unk>
        student.tokenizer.check_inputs(texts, where)
    except SpellingError as e:
        print(f"distill-jax generate: {e}", file=sys.stderr)
        return 2
    mode = "sample" if args.samples > 0 else "beam" if args.num_beams > 1 else "greedy"
    outputs = generate_texts(
        student.params, student.config, student.tokenizer, texts, args.max_new_tokens, args.batch_size, mode,
        mesh=decode_mesh(args.batch_size),
        rng=jax.random.PRNGKey(args.seed), temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        num_samples=max(args.samples, 1), num_beams=args.num_beams, length_penalty=args.length_penalty,
        progress=not args.no_progress)
    n = write_jsonl(args.output, ({**row, "output": out} for row, out in zip(rows, outputs)))
    print(f"wrote {n} rows to {args.output} ({mode})")
    return 0
