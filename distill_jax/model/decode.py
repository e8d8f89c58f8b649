"""Jitted decoding with the KV cache: greedy, sampling (temperature / top-k / top-p) and beam search.

Every loop is one `lax.while_loop` inside one jit: the encoder and the cross-attention K/V run once per
input, each step feeds one token through `T5.decode_step`, and the loop ends as soon as every row has
emitted EOS. Shapes are fixed by (batch, input length, max_new_tokens), which `generate_texts` pins to a
few buckets, so a long run compiles a handful of programs and never one per batch.
Outputs are int32 [B, max_new_tokens] (sampling: [B, n, max_new_tokens]) without the start token, with
pad after EOS.

Beam search reproduces transformers' `generate(num_beams=K)` with its defaults (early_stopping=False,
length_penalty dividing the summed log-probability by the generated length ** length_penalty, 2K
candidates per step, the early-stop heuristic of `_check_early_stop_heuristic`), so results match HF's.
"""
from __future__ import annotations

import collections
import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distill_jax.model.t5 import T5, T5Config, init_cache
from distill_jax.progress import progress_bar

Array = jax.Array
_NEG = -1.0e9  # HF's "impossible" score; kept identical so beam ties resolve as HF's do
DEFAULT_BUCKETS = (32, 64, 128, 256, 512)
# How many times each decoding program was traced (a Python side effect runs only while tracing); the tests
# use it to prove that batches of one bucket reuse one compiled program.
TRACE_COUNTS: collections.Counter = collections.Counter()


def _encode(params: Any, config: T5Config, input_ids: Array, attention_mask: Array, repeat: int):
    """Encoder output -> cross-attention K/V, each row repeated `repeat` times (beams / samples)."""
    model = T5(config)
    hidden = model.apply({"params": params}, input_ids, attention_mask, method=T5.encode)
    ckv = model.apply({"params": params}, hidden, method=T5.cross_kv)
    if repeat > 1:
        ckv = jax.tree_util.tree_map(lambda x: jnp.repeat(x, repeat, axis=0), ckv)
        attention_mask = jnp.repeat(attention_mask, repeat, axis=0)
    return model, ckv, attention_mask


def _filter_logits(logits: Array, top_k: Array, top_p: Array) -> Array:
    """Logits outside the top-k (k <= 0: all) and the nucleus of mass top_p set to -inf; the most likely
    token always stays. k and p are traced so that changing them does not recompile."""
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    rank = jnp.arange(logits.shape[-1])
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely tokens
    keep = ((top_k <= 0) | (rank < top_k)) & (before < top_p)
    keep = keep.at[:, 0].set(True)
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


# Only what changes shapes or the program is static; eos, temperature, top-k/p are traced values.
@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "num_samples", "greedy", "filtered"))
def _token_loop(params: Any, input_ids: Array, attention_mask: Array, eos_id: Array, rng: Array,
                temperature: Array, top_k: Array, top_p: Array, prefix_ids: Array | None = None,
                prefix_len: Array | None = None, *, config: T5Config, max_new_tokens: int, num_samples: int,
                greedy: bool, filtered: bool) -> tuple[Array, Array]:
    # A forced prefix (None = none: the pytree has no leaves, so that program is traced as it always was)
    # is teacher forcing through the same cache: row r emits prefix_ids[r, t] while t < prefix_len[r].
    forcing = prefix_ids is not None
    TRACE_COUNTS[("greedy" if greedy else "sample") + ("_prefix" if forcing else "")] += 1
    model, ckv, enc_mask = _encode(params, config, input_ids, attention_mask, num_samples)
    rows = enc_mask.shape[0]
    pad = config.pad_token_id

    def body(state):
        step, token, cache, out, done = state
        logits, cache = model.apply({"params": params}, token[:, None], step, cache, ckv, enc_mask,
                                    method=T5.decode_step)
        if greedy:
            nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            scaled = logits / temperature
            scaled = _filter_logits(scaled, top_k, top_p) if filtered else scaled
            nxt = jax.random.categorical(jax.random.fold_in(rng, step), scaled, axis=-1).astype(jnp.int32)
        if forcing:  # a row inside its prefix emits no EOS of its own, so `done` cannot end it early
            forced = jax.lax.dynamic_index_in_dim(prefix_ids, step, axis=1, keepdims=False)
            nxt = jnp.where(step < prefix_len, forced, nxt)
        nxt = jnp.where(done, pad, nxt)
        out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, step))
        return step + 1, nxt, cache, out, done | (nxt == eos_id)

    def cond(state):
        step, _, _, _, done = state
        return (step < max_new_tokens) & ~jnp.all(done)

    state = (jnp.int32(0), jnp.full((rows,), config.decoder_start_token_id, jnp.int32),
             init_cache(config, rows, max_new_tokens), jnp.full((rows, max_new_tokens), pad, jnp.int32),
             jnp.zeros((rows,), bool))
    steps, _, _, out, _ = jax.lax.while_loop(cond, body, state)
    return out, steps


def _gather(x: Array, idx: Array) -> Array:
    """x [B, N, ...] rows picked per batch item by idx [B, M] -> [B, M, ...]."""
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "num_beams"))
def _beam_loop(params: Any, input_ids: Array, attention_mask: Array, eos_id: Array, length_penalty: Array, *,
               config: T5Config, max_new_tokens: int, num_beams: int) -> tuple[Array, Array, Array]:
    TRACE_COUNTS["beam"] += 1
    model, ckv, enc_mask = _encode(params, config, input_ids, attention_mask, num_beams)
    b, k, t = input_ids.shape[0], num_beams, max_new_tokens
    pad = config.pad_token_id
    top_mask = jnp.arange(2 * k) < k  # only the best K candidates may finish (HF's top_num_beam_mask)

    def body(state):
        step, (run_seq, run_lp), run_score, (fin_seq, fin_lp), fin_score, fin_flag, unsat, _, cache = state
        token = run_seq.reshape(b * k, t)[jnp.arange(b * k), jnp.maximum(step - 1, 0)]
        token = jnp.where(step == 0, config.decoder_start_token_id, token)
        logits, cache = model.apply({"params": params}, token[:, None], step, cache, ckv, enc_mask,
                                    method=T5.decode_step)
        logp = jax.nn.log_softmax(logits, axis=-1).reshape(b, k, -1) + run_score[:, :, None]
        vocab = logp.shape[-1]
        cand_score, flat = jax.lax.top_k(logp.reshape(b, k * vocab), 2 * k)
        parent, tok = flat // vocab, (flat % vocab).astype(jnp.int32)
        cand_seq = jax.lax.dynamic_update_slice(_gather(run_seq, parent), tok[:, :, None], (0, 0, step))
        # the token's own log-probability: the candidate's summed score less its parent's
        tok_lp = cand_score - _gather(run_score, parent)
        cand_lp = jax.lax.dynamic_update_slice(_gather(run_lp, parent), tok_lp[:, :, None], (0, 0, step))
        hits = (tok == eos_id) | (step + 1 >= t)

        # Beams that go on: the best K candidates that did not just stop.
        keep = jax.lax.top_k(cand_score + hits * _NEG, k)[1]
        run_seq, run_lp = _gather(cand_seq, keep), _gather(cand_lp, keep)
        run_score = _gather(cand_score + hits * _NEG, keep)
        rows = (jnp.arange(b)[:, None] * k + _gather(parent, keep)).reshape(-1)
        cache = jax.tree_util.tree_map(lambda x: x[rows], cache)

        # Finished hypotheses: merge the candidates that just stopped into the K best so far.
        just = hits & top_mask[None, :]
        fin_cand = cand_score / ((step + 1).astype(jnp.float32) ** length_penalty)
        fin_cand = fin_cand + (~unsat)[:, None] * _NEG + (~just) * _NEG
        merged_score = jnp.concatenate([fin_score, fin_cand], axis=1)
        best = jax.lax.top_k(merged_score, k)[1]
        fin_seq = _gather(jnp.concatenate([fin_seq, cand_seq], axis=1), best)
        fin_lp = _gather(jnp.concatenate([fin_lp, cand_lp], axis=1), best)
        fin_score = _gather(merged_score, best)
        fin_flag = _gather(jnp.concatenate([fin_flag, just], axis=1), best)

        # HF's early_stopping=False heuristic: can the best running beam, scored at its current length,
        # still beat the worst finished one?
        best_running = run_score[:, :1] / ((step + 1).astype(jnp.float32) ** length_penalty)
        worst = jnp.where(fin_flag, jnp.min(fin_score, axis=1, keepdims=True), _NEG)
        unsat = unsat & jnp.any(best_running > worst, axis=1)
        return step + 1, (run_seq, run_lp), run_score, (fin_seq, fin_lp), fin_score, fin_flag, unsat, \
            ~jnp.all(hits), cache

    def cond(state):
        step, *_, unsat, can_continue, _ = state
        return (step < t) & jnp.any(unsat) & can_continue

    run_score = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, _NEG)[None, :], (b, 1)).astype(jnp.float32)
    empty = (jnp.full((b, k, t), pad, jnp.int32), jnp.zeros((b, k, t), jnp.float32))
    state = (jnp.int32(0), empty, run_score, empty, jnp.full((b, k), _NEG, jnp.float32), jnp.zeros((b, k), bool),
             jnp.ones((b,), bool), jnp.bool_(True), init_cache(config, b * k, t))
    _, _, _, (fin_seq, fin_lp), fin_score, *_ = jax.lax.while_loop(cond, body, state)
    return fin_seq, fin_score, fin_lp


def _eos(config: T5Config, eos_id: int | None) -> Array:
    # eos_id=-1 never matches: benchmarks use it to force max_new_tokens steps.
    return jnp.int32(config.eos_token_id if eos_id is None else eos_id)


def greedy(params: Any, config: T5Config, input_ids: Array, attention_mask: Array, max_new_tokens: int, *,
           eos_id: int | None = None, return_steps: bool = False, prefix_ids: Array | None = None,
           prefix_len: Array | None = None):
    """Argmax decoding -> int32 [B, max_new_tokens] (and the number of steps run when return_steps).

    With prefix_ids int32 [B, max_new_tokens] and prefix_len int32 [B], row r's first prefix_len[r] tokens
    are forced to prefix_ids[r, :prefix_len[r]] (and are part of the output); argmax takes over after them.
    Prefix lengths are data: one compiled program serves every prefix of a shape."""
    if (prefix_ids is None) != (prefix_len is None):
        raise ValueError("give both prefix_ids and prefix_len, or neither")
    if prefix_ids is not None and (prefix_ids.shape != (input_ids.shape[0], max_new_tokens)
                                   or prefix_len.shape != (input_ids.shape[0],)):
        raise ValueError(f"prefix_ids must be [B, max_new_tokens] = {[input_ids.shape[0], max_new_tokens]} and "
                         f"prefix_len [B], got {list(prefix_ids.shape)} and {list(prefix_len.shape)}")
    out, steps = _token_loop(params, input_ids, attention_mask, _eos(config, eos_id), jax.random.PRNGKey(0),
                             jnp.float32(1.0), jnp.int32(0), jnp.float32(1.0), prefix_ids, prefix_len,
                             config=config, max_new_tokens=max_new_tokens, num_samples=1, greedy=True,
                             filtered=False)
    return (out, steps) if return_steps else out


def sample(params: Any, config: T5Config, input_ids: Array, attention_mask: Array, max_new_tokens: int,
           rng: Array, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_samples: int = 1, *,
           eos_id: int | None = None) -> Array:
    """`num_samples` samples per input -> int32 [B, num_samples, max_new_tokens]; same key, same samples."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy for argmax), got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    out, _ = _token_loop(params, input_ids, attention_mask, _eos(config, eos_id), rng, jnp.float32(temperature),
                         jnp.int32(top_k), jnp.float32(top_p), config=config, max_new_tokens=max_new_tokens,
                         num_samples=num_samples, greedy=False, filtered=top_k > 0 or top_p < 1.0)
    return out.reshape(input_ids.shape[0], num_samples, max_new_tokens)


class Beams(NamedTuple):
    """Every beam per input, best first, as t5x's decoder and HF's `num_return_sequences=num_beams` give them.

    tokens int32 [B, K, T] (pad after EOS); scores float32 [B, K]: the summed log-probability divided by the
    generated length ** length_penalty (HF's `sequences_scores`); token_logprobs float32 [B, K, T]: each
    token's log-probability given the tokens before it (0 after EOS), summing to the unpenalised score."""

    tokens: Array
    scores: Array
    token_logprobs: Array


def beams(params: Any, config: T5Config, input_ids: Array, attention_mask: Array, max_new_tokens: int,
          num_beams: int = 4, length_penalty: float = 1.0, *, eos_id: int | None = None) -> Beams:
    """Beam search returning all `num_beams` hypotheses per input with their scores (see `Beams`)."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    return Beams(*_beam_loop(params, input_ids, attention_mask, _eos(config, eos_id), jnp.float32(length_penalty),
                             config=config, max_new_tokens=max_new_tokens, num_beams=num_beams))


def beam_search(params: Any, config: T5Config, input_ids: Array, attention_mask: Array, max_new_tokens: int,
                num_beams: int = 4, length_penalty: float = 1.0, *, eos_id: int | None = None) -> Array:
    """The best beam per input -> int32 [B, max_new_tokens], as HF `generate(num_beams=...)` returns it."""
    return beams(params, config, input_ids, attention_mask, max_new_tokens, num_beams, length_penalty,
                 eos_id=eos_id).tokens[:, 0]


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding `length` tokens (inputs longer than the largest are truncated to it)."""
    return next((b for b in sorted(buckets) if b >= length), max(buckets))


def generate_texts(params: Any, config: T5Config, tokenizer: Any, inputs: Sequence[str], max_new_tokens: int,
                   batch_size: int, mode: str = "greedy", *, mesh: Mesh | None = None, rng: Array | None = None,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
                   num_beams: int = 4, length_penalty: float = 1.0, buckets: Sequence[int] = DEFAULT_BUCKETS,
                   param_shardings: Any = None, progress: bool = True, all_beams: bool = False) -> list[Any]:
    """Decode every input text; results in input order (a list of `num_samples` texts per input when sampling
    with num_samples > 1; with mode='beam' and all_beams, a list of `num_beams` BeamText per input, best first).
    Inputs are grouped by length bucket and padded to [batch_size, bucket], so each bucket compiles once. With a
    mesh the batch axis is sharded over its `data` (and `fsdp`) axes and the params are replicated, or placed
    with `param_shardings` when given."""
    if mode not in ("greedy", "sample", "beam"):
        raise ValueError(f"mode must be 'greedy', 'sample' or 'beam', got {mode!r}")
    if all_beams and mode != "beam":
        raise ValueError(f"all_beams needs mode='beam', got mode={mode!r}")
    if mode == "sample" and rng is None:
        raise ValueError("mode='sample' needs an explicit rng key")
    batch_axes = tuple(a for a in ("data", "fsdp") if mesh is not None and a in mesh.shape)
    data_size = math.prod(mesh.shape[a] for a in batch_axes) if mesh is not None else 1
    if mesh is not None and not batch_axes:
        raise ValueError(f"the mesh has no `data` axis to shard the batch over (axes {tuple(mesh.shape)})")
    if batch_size % data_size:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the mesh's batch axes ({data_size})")
    encoded = tokenizer.encode_batch(list(inputs))
    limit = max(buckets)
    by_bucket: dict[int, list[int]] = collections.defaultdict(list)
    for i, ids in enumerate(encoded):
        if len(ids) > limit:  # keep EOS last: the model was trained on inputs that end with it
            encoded[i] = ids[:limit - 1] + [tokenizer.eos_id]
        by_bucket[bucket_for(len(encoded[i]), buckets)].append(i)
    if mesh is not None:
        batch_sharding = NamedSharding(mesh, P(batch_axes))
        params = jax.device_put(params, param_shardings if param_shardings is not None
                                else NamedSharding(mesh, P()))
    results: list[Any] = [None] * len(encoded)
    jobs = [(length, idx[s:s + batch_size]) for length, idx in sorted(by_bucket.items())
            for s in range(0, len(idx), batch_size)]
    for n, (length, rows) in enumerate(_progress(jobs, len(encoded), progress)):
        ids = np.full((batch_size, length), tokenizer.pad_id, np.int32)
        mask = np.zeros((batch_size, length), np.int32)
        for r, i in enumerate(rows):
            ids[r, :len(encoded[i])] = encoded[i]
            mask[r, :len(encoded[i])] = 1
        ids, mask = jnp.asarray(ids), jnp.asarray(mask)
        if mesh is not None:
            ids, mask = jax.device_put(ids, batch_sharding), jax.device_put(mask, batch_sharding)
        if mode == "greedy":
            out = np.asarray(greedy(params, config, ids, mask, max_new_tokens))
        elif mode == "beam":
            found = jax.device_get(beams(params, config, ids, mask, max_new_tokens, num_beams, length_penalty))
            out = found.tokens[:, 0]
        else:
            out = np.asarray(sample(params, config, ids, mask, max_new_tokens, jax.random.fold_in(rng, n),
                                    temperature, top_k, top_p, num_samples))
        for r, i in enumerate(rows):
            if all_beams:
                results[i] = [_beam_text(tokenizer, found.tokens[r, j], found.scores[r, j],
                                         found.token_logprobs[r, j]) for j in range(num_beams)]
            elif mode == "sample" and num_samples > 1:
                results[i] = tokenizer.decode_batch(out[r])
            else:
                results[i] = tokenizer.decode(out[r].reshape(-1, max_new_tokens)[0])
    return results


class BeamText(NamedTuple):
    """One decoded beam: its text, score (see `Beams`), and its tokens up to EOS with their log-probabilities."""

    text: str
    score: float
    tokens: list[int]
    token_logprobs: list[float]


def _beam_text(tokenizer: Any, tokens: np.ndarray, score: np.ndarray, logprobs: np.ndarray) -> BeamText:
    ids = tokens.tolist()
    n = ids.index(tokenizer.eos_id) + 1 if tokenizer.eos_id in ids else len(ids)
    return BeamText(tokenizer.decode(tokens), float(score), ids[:n], logprobs[:n].tolist())


def _progress(jobs: list, total: int, enabled: bool):
    """Yield jobs while a progress bar counts decoded inputs."""
    with progress_bar("decoding", "bucket {task.fields[bucket]}", enabled=enabled) as bar:
        task = bar.add_task("decode", total=total, bucket="-")
        for job in jobs:
            bar.update(task, bucket=job[0])
            yield job
            bar.advance(task, len(job[1]))
