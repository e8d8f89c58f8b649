"""Vocabulary rows for tokens added to a pretrained student's tokenizer (model/tokenizer.py `with_symbols`).

A HF T5 fine-tuned on programs gets tokens for newline, indentation, braces and the like; its embedding (and an
untied lm_head) needs a row per new token. New rows start at the mean of the rows the model was trained with,
the recipe of Hewitt (2021, "Initializing new word embeddings for pretrained language models") that
transformers' `resize_token_embeddings(mean_resizing=True)` also uses: the new tokens read as an average token
and, in the head, score near the average logit, so they neither dominate the softmax at the first step (random
rows at the init scale can) nor all sit at one point far from the trained tokens (zero rows in a tied model).
A grown vocab is rounded up to a multiple of 128, as T5's own 32128 is.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
import numpy as np
from flax import traverse_util

from distill_jax.model.hf import name_pairs
from distill_jax.model.t5 import T5Config
from distill_jax.model.tokenizer import Tokenizer

VOCAB_MULTIPLE = 128
# HF tensors with one row (shared) or one column (lm_head, transposed into our [d_model, vocab]) per token.
_VOCAB_TENSORS = ("shared.weight", "lm_head.weight")


def grown_config(config: T5Config, tokens: int) -> T5Config:
    """`config` with room for `tokens` tokens: unchanged when it has it, else rounded up to VOCAB_MULTIPLE."""
    if config.vocab_size >= tokens:
        return config
    return dataclasses.replace(config, vocab_size=-(-tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE)


def _vocab_rows(flat: dict, config: T5Config):
    """(our path, transposed, [vocab, d_model] rows) of every vocab tensor in flattened `params`."""
    for ours, theirs, transposed in name_pairs(config):
        if theirs in _VOCAB_TENSORS:
            rows = np.asarray(flat[ours], dtype=np.float32)
            yield ours, transposed, rows.T if transposed else rows


def grow_rows(params: dict, config: T5Config, trained: int, tokens: int) -> dict:
    """`params` with config.vocab_size rows in every vocab tensor; rows `trained`..`tokens` - 1 (tokens the model
    never saw) and every row created here are the mean of rows 0..`trained` - 1. Other rows are left as they are."""
    flat = traverse_util.flatten_dict(params, sep="/")
    for ours, transposed, rows in list(_vocab_rows(flat, config)):
        if rows.shape[0] > config.vocab_size:
            raise ValueError(f"{ours} has {rows.shape[0]} rows, more than vocab_size {config.vocab_size}")
        if not 0 < trained <= rows.shape[0]:
            raise ValueError(f"trained rows {trained} outside 1..{rows.shape[0]} of {ours}")
        mean = rows[:trained].mean(axis=0)
        grown = np.concatenate([rows, np.broadcast_to(mean, (config.vocab_size - rows.shape[0], rows.shape[1]))])
        grown[trained:max(tokens, trained)] = mean
        flat[ours] = np.ascontiguousarray(grown.T if transposed else grown)
    return traverse_util.unflatten_dict(flat, sep="/")


def grow_for_tokenizer(params: dict, config: T5Config, model_dir: str | Path, tokenizer: Tokenizer) -> dict:
    """`params` loaded from the HF directory `model_dir`, grown for `tokenizer`: tokens beyond the directory's own
    tokenizer (or beyond its rows, without one) get mean rows. The identity when the tokenizer did not grow."""
    rows = next(_vocab_rows(traverse_util.flatten_dict(params, sep="/"), config))[2].shape[0]
    has_tokenizer = any((Path(model_dir) / f).is_file() for f in ("tokenizer.json", "spiece.model"))
    trained = min(Tokenizer.load(model_dir).vocab_size if has_tokenizer else rows, rows)
    if tokenizer.vocab_size <= trained and rows == config.vocab_size:
        return params
    return grow_rows(params, config, trained, tokenizer.vocab_size)


__all__ = ["VOCAB_MULTIPLE", "grown_config", "grow_rows", "grow_for_tokenizer"]
