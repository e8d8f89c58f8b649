"""`distill-jax export`: a student as a Hugging Face T5 directory, or a run's rationales as a Parquet dataset.

`--model`: a HF directory (re-exported through our params, e.g. to check a conversion or to turn a
pytorch_model.bin into safetensors) or a training run directory (RUN_DIR/ckpt/<step>/ + RUN_DIR/config.yaml);
the tokenizer files go with it, so transformers' AutoTokenizer decodes what the student writes (README "Export").
`--dataset RUN`: RUN/rationales/<round>/STYLE.jsonl as OUT/<round>/STYLE.parquet with a dataset card
(data/rationale_dataset.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import jax

from distill_jax.config import ConfigError
from distill_jax.data.rationale_dataset import export_dataset
from distill_jax.data.records import DataError
from distill_jax.model.hf import WEIGHT_FILES, load_hf, save_hf, tokenizer_files
from distill_jax.model.escape_era import is_escape_era
from distill_jax.model.tokenizer import read_meta
from distill_jax.train.checkpoint import Checkpointer, load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="HF model directory or training run directory")
    src.add_argument("--dataset", metavar="RUN", help="a run directory: its rationales as Parquet + dataset card")
    parser.add_argument("--out", help="output directory (default for a run's model: RUN_DIR/hf/<step>)")
    parser.add_argument("--step", type=int, help="checkpoint step of a run (default: the latest)")


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / name).is_file() for name in WEIGHT_FILES)


def _is_run_dir(path: Path) -> bool:
    return (path / "ckpt").is_dir() or (path / "config.yaml").is_file()


def _export_dataset(args: argparse.Namespace) -> int:
    if args.out is None or args.step is not None:
        raise ConfigError("--dataset needs --out and takes no --step")
    try:
        counts = export_dataset(args.dataset, args.out)
    except DataError as e:
        raise ConfigError(str(e)) from e
    for round_name, styles in counts.items():
        print(f"{round_name}: " + ", ".join(f"{s} {n}" for s, n in styles.items()))
    print(f"wrote {sum(sum(s.values()) for s in counts.values())} records as Parquet with a dataset card to {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.dataset is not None:
        return _export_dataset(args)
    src = Path(args.model)
    if _is_hf_dir(src):
        if args.step is not None:
            raise ConfigError(f"--step applies to training runs; {src} is a Hugging Face directory")
        if args.out is None:
            raise ConfigError("--out is required when --model is a Hugging Face directory")
        config, params = load_hf(src)
        tokenizer_dir = src if tokenizer_files(src) else None
        out = Path(args.out)
    elif _is_run_dir(src):
        config, params, tokenizer_dir = load_params(src, args.step)
        if args.out is not None:
            out = Path(args.out)
        else:
            ckpt = Checkpointer(src, read_only=True, async_save=False)
            try:
                out = src / "hf" / str(ckpt.check_step(args.step))
            finally:
                ckpt.close()
    else:
        raise ConfigError(f"--model {src}: neither a Hugging Face directory (config.json + "
                          f"{' or '.join(WEIGHT_FILES)}) nor a training run (ckpt/ or config.yaml)")
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out {out} is the source directory; choose another")
    save_hf(params, config, out, tokenizer_dir=tokenizer_dir)
    if tokenizer_dir is not None and is_escape_era(read_meta(tokenizer_dir)):
        print(f"note: {tokenizer_dir} is an escape-era tokenizer: in plain transformers this student writes the "
              "escaped form (~n for a newline); distill-jax generate/eval undo it. Retrain to export native text.")
    n_params = sum(int(v.size) for v in jax.tree.leaves(params))
    print(f"exported {n_params:,} params ({config.feed_forward_proj}, "
          f"{'tied' if config.tie_word_embeddings else 'untied'} head) to {out}")
    return 0
