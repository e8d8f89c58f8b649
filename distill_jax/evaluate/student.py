"""The student under evaluation: loaded from a HF directory or a run's checkpoint, and decoded in batches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from distill_jax.config import ConfigError
from distill_jax.evaluate.calculator import generate_with_calculator
from distill_jax.evaluate.config import DecodingConfig
from distill_jax.model.decode import BeamText, generate_texts
from distill_jax.model.hf import load_hf
from distill_jax.model.tokenizer import Tokenizer, TokenizerError
from distill_jax.train.checkpoint import load_params


@dataclass
class Student:
    """What decoding needs: params, model config, tokenizer; `step` names the checkpoint ("hf" for a bare dir)."""

    step: int | str
    params: Any
    config: Any
    tokenizer: Any


def load_student(source: str | Path, step: int | str | None = None, tokenizer: str | None = None) -> Student:
    """A Hugging Face directory (step None or "hf") or checkpoint `step` of a training run (None: the latest);
    `tokenizer` replaces the model's own tokenizer directory."""
    path = Path(source)
    if not path.is_dir():
        raise ConfigError(f"model {path} is not a directory")
    if (path / "config.json").is_file() and step in (None, "hf"):
        config, params = load_hf(path)
        tokenizer_dir, step = str(path), "hf"
    else:
        config, params, tokenizer_dir = load_params(path, None if step == "hf" else step)
    try:
        tok = Tokenizer.load(tokenizer or tokenizer_dir)
    except TokenizerError as e:
        raise ConfigError(f"tokenizer: {e}") from e
    if tok.vocab_size > config.vocab_size:
        raise ConfigError(f"tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {config.vocab_size}")
    return Student(step if step is not None else "latest", params, config, tok)


def decode_outputs(student: Student, inputs: list[str], dec: DecodingConfig, mesh: Any,
                   progress: bool = True) -> list[list[str]]:
    """Every input's outputs as a list (one per sample)."""
    if dec.calculator:
        texts = generate_with_calculator(student.params, student.config, student.tokenizer, inputs,
                                         dec.max_new_tokens, dec.batch_size, mesh=mesh)
        return [[t] for t in texts]
    kwargs: dict[str, Any] = {"mode": dec.mode, "mesh": mesh, "progress": progress}
    if dec.mode == "beam":
        kwargs.update(num_beams=dec.num_beams, length_penalty=dec.length_penalty)
    if dec.mode == "sample":
        kwargs.update(rng=jax.random.PRNGKey(dec.seed), temperature=dec.temperature, top_k=dec.top_k,
                      top_p=dec.top_p, num_samples=dec.samples)
    texts = generate_texts(student.params, student.config, student.tokenizer, inputs, dec.max_new_tokens,
                           dec.batch_size, **kwargs)
    return [t if isinstance(t, list) else [t] for t in texts]


def decode_beams(student: Student, inputs: list[str], num_beams: int, dec: DecodingConfig, mesh: Any,
                 progress: bool = True) -> list[list[BeamText]]:
    """Every input's `num_beams` beams, best first, with scores and per-token log-probabilities
    (`dec` gives max_new_tokens, batch_size and length_penalty)."""
    return generate_texts(student.params, student.config, student.tokenizer, inputs, dec.max_new_tokens,
                          dec.batch_size, "beam", mesh=mesh, num_beams=num_beams, length_penalty=dec.length_penalty,
                          progress=progress, all_beams=True)


def decode_mesh(batch_size: int) -> Any:
    """A 1-D `data` mesh over as many local devices as divide the batch (all of them on one host)."""
    devices = jax.local_devices()
    n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0 and len(devices) % d == 0)
    return Mesh(np.array(devices[:n]), ("data",))
