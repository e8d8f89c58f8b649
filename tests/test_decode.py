"""Decoding: parity with transformers' generate (greedy, beam), sampling, early stop, compile reuse, CLI."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jax.sharding import Mesh

from distill_jax.cli import main as cli_main
from distill_jax.model import decode
from distill_jax.model.hf import load_hf
from distill_jax.model.tokenizer import Tokenizer, train_tokenizer
from distill_jax.reasoning.styles import student_input
from helpers_hf import make_tiny_hf_t5

T = 16
B, S = 6, 12  # one shape for every parity test: each family compiles one greedy and one beam program


_MODELS: dict = {}


def _tiny(family: str, tmp_path_factory, layout: str = "unrolled"):
    if (family, layout) not in _MODELS:
        hf_dir, torch_model = make_tiny_hf_t5(tmp_path_factory.mktemp("hf"), family=family, seed=1)
        _MODELS[family, layout] = (*load_hf(hf_dir, scan_layers=layout == "scanned"), torch_model)
    return _MODELS[family, layout]


# both families unrolled, and the scanned layout (stacked params and KV cache) once: decoding is the same code
@pytest.fixture(params=[("v1_0", "unrolled"), ("v1_1", "unrolled"), ("v1_1", "scanned")], ids="-".join)
def tiny(request, tmp_path_factory):
    family, layout = request.param
    return _tiny(family, tmp_path_factory, layout)


@pytest.fixture
def gated(tmp_path_factory):
    """Sampling and the loop's stop do not depend on the family: one is enough for the time budget."""
    return _tiny("v1_1", tmp_path_factory)


def _batch(seed: int, batch: int, length: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs of different lengths, right-padded, each ending with EOS."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((batch, length), np.int32)
    mask = np.zeros((batch, length), np.int32)
    for row, n in enumerate(rng.integers(2, length + 1, batch)):
        ids[row, :n - 1] = rng.integers(3, vocab, n - 1)
        ids[row, n - 1] = 1
        mask[row, :n] = 1
    return ids, mask


def _upto_eos(rows: np.ndarray, eos: int) -> list[list[int]]:
    """Tokens up to and including the first EOS (HF fills after it with EOS or pad, we with pad)."""
    out = []
    for row in rows.tolist():
        out.append(row[:row.index(eos) + 1] if eos in row else row)
    return out


def _hf(model, ids, mask, **kwargs) -> np.ndarray:
    with torch.no_grad():
        seq = model.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long), max_new_tokens=T,
                             do_sample=False, **kwargs)
    return seq.numpy()[:, 1:]  # drop the decoder start token


@pytest.mark.parametrize("seed", [5, 13])
def test_greedy_matches_hf(tiny, seed: int) -> None:
    config, params, model = tiny
    ids, mask = _batch(seed, B, S, config.vocab_size)
    ours = np.asarray(decode.greedy(params, config, jnp.asarray(ids), jnp.asarray(mask), T))
    assert ours.shape == (B, T) and ours.dtype == np.int32
    assert _upto_eos(ours, 1) == _upto_eos(_hf(model, ids, mask, num_beams=1), 1)


def test_beam_matches_hf(tiny) -> None:
    config, params, model = tiny
    ids, mask = _batch(3, B, S, config.vocab_size)
    greedy = np.asarray(decode.greedy(params, config, jnp.asarray(ids), jnp.asarray(mask), T, eos_id=-1))
    # A token the model emits often, used as EOS, makes beams finish early: exercises the finished-beam merge
    # and the early-stop heuristic, which the real EOS (rare in a random model) would not reach.
    frequent = int(np.bincount(greedy.ravel()).argmax())
    for eos, penalty in ((1, 1.0), (frequent, 1.0), (frequent, 0.5)):
        found = jax.device_get(decode.beams(params, config, jnp.asarray(ids), jnp.asarray(mask), T, num_beams=4,
                                            length_penalty=penalty, eos_id=eos))
        best = np.asarray(decode.beam_search(params, config, jnp.asarray(ids), jnp.asarray(mask), T, num_beams=4,
                                             length_penalty=penalty, eos_id=eos))
        np.testing.assert_array_equal(best, found.tokens[:, 0])
        with torch.no_grad():
            theirs = model.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                                    attention_mask=torch.tensor(mask, dtype=torch.long), max_new_tokens=T,
                                    do_sample=False, num_beams=4, num_return_sequences=4, length_penalty=penalty,
                                    eos_token_id=eos, output_scores=True, return_dict_in_generate=True)
        # every beam, best first, with HF's sequences_scores
        hf_seq = theirs.sequences.numpy()[:, 1:]
        assert _upto_eos(found.tokens.reshape(B * 4, T), eos) == _upto_eos(hf_seq, eos), (eos, penalty)
        np.testing.assert_allclose(found.scores.reshape(-1), theirs.sequences_scores.numpy(), rtol=1e-4, atol=1e-5)
        assert np.all(np.diff(found.scores, axis=1) <= 1e-6)  # sorted best first
        for row, lp, score in zip(found.tokens.reshape(B * 4, T).tolist(), found.token_logprobs.reshape(B * 4, T),
                                  found.scores.reshape(-1)):
            n = row.index(eos) + 1 if eos in row else T
            assert set(row[n:]) <= {config.pad_token_id} and not np.any(lp[n:])  # pad after EOS
            assert np.all(lp[:n] <= 0)
            np.testing.assert_allclose(lp[:n].sum() / n ** penalty, score, rtol=1e-4)  # the score they make


def test_sampling(gated) -> None:
    config, params, _ = gated
    ids, mask = (jnp.asarray(a) for a in _batch(7, B, S, config.vocab_size))
    key = jax.random.PRNGKey(42)
    a = np.asarray(decode.sample(params, config, ids, mask, T, key, temperature=1.5, num_samples=4))
    b = np.asarray(decode.sample(params, config, ids, mask, T, key, temperature=1.5, num_samples=4))
    c = np.asarray(decode.sample(params, config, ids, mask, T, jax.random.PRNGKey(7), temperature=1.5,
                                 num_samples=4))
    assert a.shape == (B, 4, T)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({tuple(s) for s in a[0].tolist()}) > 1  # the samples of one input differ
    greedy = np.asarray(decode.greedy(params, config, ids, mask, T))
    top1 = np.asarray(decode.sample(params, config, ids, mask, T, key, temperature=2.0, top_k=1, num_samples=4))
    nucleus = np.asarray(decode.sample(params, config, ids, mask, T, key, top_p=1e-6, num_samples=4))
    for n in range(4):
        np.testing.assert_array_equal(top1[:, n], greedy)
        np.testing.assert_array_equal(nucleus[:, n], greedy)


def test_early_stop(gated) -> None:
    config, params, _ = gated
    ids, mask = _batch(11, 1, S, config.vocab_size)
    ids, mask = jnp.asarray(np.repeat(ids, B, 0)), jnp.asarray(np.repeat(mask, B, 0))
    full, steps = decode.greedy(params, config, ids, mask, T, eos_id=-1, return_steps=True)
    assert int(steps) == T
    stop = int(full[0, 2])  # every row emits it at step 2: as EOS the loop must end after 3 steps
    out, steps = decode.greedy(params, config, ids, mask, T, eos_id=stop, return_steps=True)
    first = list(np.asarray(full[0])).index(stop)
    assert int(steps) == first + 1
    assert (np.asarray(out[:, first + 1:]) == config.pad_token_id).all()


@pytest.fixture(scope="module")
def student(data_dir, tmp_path_factory):
    """A trained tokenizer and a tiny HF model with exactly its vocab, saved together as one HF directory."""
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").open(encoding="utf-8")][:300]
    tok_dir = tmp_path_factory.mktemp("tok")
    tokenizer = train_tokenizer([r["question"] for r in rows] + [r["solution"] for r in rows], tok_dir, 160)
    hf_dir, _ = make_tiny_hf_t5(tmp_path_factory.mktemp("student"), family="v1_1", seed=2,
                                vocab_size=tokenizer.vocab_size)
    tokenizer.save(hf_dir)
    config, params = load_hf(hf_dir)
    questions = [r["question"] for r in rows[:10]] + ["short one", "x = 1\n    y = {2}"]
    return hf_dir, config, params, Tokenizer.load(hf_dir), questions


def test_generate_texts_order_buckets_and_no_recompile(student) -> None:
    _, config, params, tokenizer, questions = student
    texts = questions[-2:] + questions[:5]
    lengths = [len(ids) for ids in tokenizer.encode_batch(texts)]
    buckets = sorted({decode.bucket_for(n, (32, 128)) for n in lengths})
    assert len(buckets) == 2 and len(texts) > 2 * len(buckets)  # several batches per bucket
    before = decode.TRACE_COUNTS["greedy"]
    out = decode.generate_texts(params, config, tokenizer, texts, 6, batch_size=2, buckets=(32, 128),
                                progress=False)
    assert decode.TRACE_COUNTS["greedy"] - before == len(buckets)  # one program per bucket, not per batch
    again = decode.generate_texts(params, config, tokenizer, texts[::-1], 6, batch_size=2, buckets=(32, 128),
                                  progress=False)
    assert decode.TRACE_COUNTS["greedy"] - before == len(buckets)
    assert again == out[::-1]  # input order kept whatever the batching
    single = [decode.generate_texts(params, config, tokenizer, [t], 6, batch_size=2, buckets=(32, 128),
                                    progress=False)[0] for t in texts[:2]]
    assert single == out[:2]


def test_generate_texts_on_mesh_matches_one_device(student) -> None:
    _, config, params, tokenizer, questions = student
    size = jax.device_count()
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    one = decode.generate_texts(params, config, tokenizer, questions, 5, batch_size=2, mode="beam", num_beams=2,
                                buckets=(128,), progress=False)
    sharded = decode.generate_texts(params, config, tokenizer, questions, 5, batch_size=size, mode="beam",
                                    num_beams=2, buckets=(128,), mesh=mesh, progress=False)
    assert sharded == one


def test_generate_cli(student, tmp_path) -> None:
    hf_dir, config, params, tokenizer, _ = student
    questions = ["short one", "x = 1\n    y = {2}", "Tom has 3 apples and 4 pears."]  # one bucket: few compiles
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "input": q}) + "\n" for i, q in enumerate(questions)))
    out = tmp_path / "out.jsonl"
    args = ["generate", "--model", str(hf_dir), "--input", str(src), "--output", str(out), "--max-new-tokens", "6",
            "--batch-size", "2", "--no-progress"]
    assert cli_main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(len(questions))]
    expected = decode.generate_texts(params, config, tokenizer, questions, 6, batch_size=2, progress=False)
    assert [r["output"] for r in rows] == expected
    assert cli_main(args + ["--samples", "3", "--temperature", "0.7"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(isinstance(r["output"], list) and len(r["output"]) == 3 for r in rows)
    src.write_text("".join(json.dumps({"id": i, "question": q}) + "\n" for i, q in enumerate(questions)))
    assert cli_main(args + ["--style", "pot"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    styled = [student_input(q, "pot") for q in questions]
    assert [r["output"] for r in rows] == decode.generate_texts(params, config, tokenizer, styled, 6, batch_size=2,
                                                                progress=False)
    src.write_text(json.dumps({"id": "bad"}) + "\n")
    assert cli_main(args) == 2  # names the file and line instead of a traceback
