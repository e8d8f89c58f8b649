"""Fast unit tests of the training parts that need no compiled T5: mesh, sharding rules, batches, optimizer."""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from jax.sharding import PartitionSpec as P

from distill_jax.config import ConfigError, load
from distill_jax.data.records import DataError
from distill_jax.train import batches as B
from distill_jax.train import sharding as S
from distill_jax.train.config import TrainConfig
from distill_jax.train.optim import OptimConfig, make_optimizer, make_schedule


def test_mesh_fills_and_rejects():
    assert len(jax.devices()) == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    assert dict(S.make_mesh(S.MeshConfig()).shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(S.make_mesh(S.MeshConfig(data=-1, fsdp=2, tensor=2)).shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ConfigError, match="do not divide the 8 devices"):
        S.make_mesh(S.MeshConfig(data=-1, fsdp=3))
    with pytest.raises(ConfigError, match="uses 4 devices but 8"):
        S.make_mesh(S.MeshConfig(data=2, fsdp=2, tensor=1))
    with pytest.raises(ValueError, match="at most one"):
        S.MeshConfig(data=-1, fsdp=-1)


def test_logical_rules_divisibility_scalars_and_missing(caplog):
    mesh = S.make_mesh(S.MeshConfig(data=2, fsdp=2, tensor=2))
    assert S.logical_to_spec(("vocab", "embed"), (100, 64), mesh, "emb") == P("tensor", "fsdp")
    with caplog.at_level(logging.INFO, logger="distill_jax.train.sharding"):
        assert S.logical_to_spec(("vocab", "embed"), (101, 64), mesh, "emb") == P(None, "fsdp")
    assert "not divisible" in caplog.text and "emb" in caplog.text
    with pytest.raises(ValueError, match="no sharding rule for logical axis 'bogus'"):
        S.logical_to_spec(("bogus",), (8,), mesh, "x")
    tree = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32), "s": jax.ShapeDtypeStruct((), jnp.float32)}
    specs = S.param_specs(tree, {"w": ("embed", "mlp"), "s": ()}, mesh)
    assert specs == {"w": P("fsdp", "tensor"), "s": P()}


def test_optimizer_state_follows_params_including_factored_adafactor():
    mesh = S.make_mesh(S.MeshConfig(data=1, fsdp=4, tensor=2))
    params = {"enc": {"wi": jnp.zeros((256, 128)), "norm": jnp.zeros((256,))}}
    pspec = {"enc": {"wi": P("fsdp", "tensor"), "norm": P("fsdp")}}
    abstract_opt = jax.eval_shape(optax.adafactor(1e-3).init, params)
    specs = S.tree_specs_like_params(abstract_opt, params, pspec)
    got = {(leaf.shape, spec) for leaf, spec in zip(
        jax.tree_util.tree_leaves(abstract_opt), jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, P)))}
    # v_row / v_col of the 256x128 matrix: each keeps the sharding of the dim it did not average away
    assert ((256,), P("fsdp")) in got and ((128,), P("tensor")) in got
    assert all(spec == P() for shape, spec in got if shape in ((), (1,)))
    adam = jax.eval_shape(optax.adam(1e-3).init, params)
    adam_specs = S.tree_specs_like_params(adam, params, pspec)
    assert adam_specs[0].mu == pspec and adam_specs[0].nu == pspec and adam_specs[0].count == P()


def _examples(n: int, n_buckets: int = 2) -> list[B.Example]:
    return [B.Example([i + 2, 1], [i + 3, 1], 1.0, i % n_buckets, "pot") for i in range(n)]


def test_epoch_plan_covers_each_example_once_and_is_deterministic():
    ex = _examples(21)
    plan = B.epoch_plan(ex, 2, 4, seed=3, epoch=0)
    seen = np.concatenate([rows for _, rows in plan])
    assert sorted(seen[seen >= 0].tolist()) == list(range(21))
    assert all(all(ex[i].bucket == b for i in rows if i >= 0) for b, rows in plan)
    again = B.epoch_plan(ex, 2, 4, seed=3, epoch=0)
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(plan, again))
    other = B.epoch_plan(ex, 2, 4, seed=3, epoch=1)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(plan, other))


def test_iterator_resumes_at_its_position_across_epochs():
    mesh = S.make_mesh(S.MeshConfig())
    sh = S.batch_sharding(mesh)
    ex = _examples(40)
    buckets = [(4, 4), (6, 6)]
    it = B.BatchIterator(ex, buckets, 8, seed=1, sharding=sh, pad_id=0)
    spe = it.steps_per_epoch
    first = [next(it) for _ in range(spe + 1)]  # crosses into epoch 1
    pos = it.position
    rest = [next(it) for _ in range(3)]
    resumed = B.BatchIterator(ex, buckets, 8, seed=1, sharding=sh, pad_id=0, **pos)
    assert pos["epoch"] == 1
    for a, b in zip(rest, (next(resumed) for _ in range(3))):
        for k in a:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    assert first[0]["input_ids"].sharding.spec == P(("data", "fsdp"))
    # filler rows of the last partial batch have weight 0 and no labels
    weights = np.concatenate([np.asarray(b["weights"]) for b in first[:spe]])
    assert weights.sum() == 40 and set(np.unique(weights)) <= {0.0, 1.0}


def test_truncate_and_drop_are_counted():
    class Tok:
        pad_id = 0

        def encode_batch(self, texts, add_eos=True):
            return [[5] * len(t.split()) + [1] for t in texts]

    recs = [{"question": "a b c", "style": "pot", "rationale": "x " * n, "meta": {}} for n in (2, 3, 30)]
    ex, st = B.tokenize(recs, Tok(), B.DataConfig(buckets=((8, 4), (8, 8)), overflow="truncate"))
    assert st["truncated"] == 1 and st["per_bucket"] == [2, 1] and len(ex[2].target_ids) == 8
    ex, st = B.tokenize(recs, Tok(), B.DataConfig(buckets=((8, 8),), overflow="drop"))
    assert st["dropped"] == 1 and len(ex) == 2


def test_weights_from_style_and_task():
    class Tok:
        pad_id = 0

        def encode_batch(self, texts, add_eos=True):
            return [[3, 1] for _ in texts]

    recs = [{"question": "q", "style": "dss", "rationale": "r", "meta": {"task": "label"}},
            {"question": "q", "style": "dss", "rationale": "r", "meta": {"task": "rationale", "weight": 3.0}},
            {"question": "q", "style": "pot", "rationale": "r", "meta": {}}]
    cfg = B.DataConfig(style_weights={"dss": 2.0}, task_weights={"rationale": 0.5})
    ex, _ = B.tokenize(recs, Tok(), cfg)
    assert [e.weight for e in ex] == [2.0, 3.0, 1.0]  # record's meta.weight x style x task
    with pytest.raises(DataError, match="r.jsonl:9: meta.weight must be a number >= 0"):
        B.example_weight({"style": "pot", "meta": {"weight": "x"}, "_where": "r.jsonl:9"}, cfg)
    assert [B.input_text(r) for r in recs] == ["[dss] q", "[dss:rationale] q", "[pot] q"]
    with pytest.raises(DataError, match="f.jsonl:3: unknown style 'nope'"):
        B.input_text({"question": "q", "style": "nope", "_where": "f.jsonl:3"})
    # methods that build their own input (PaD refine, decomposer/solver) carry it in meta.input
    refine = {"question": "q", "style": "pot", "meta": {"task": "refine", "input": "[pot:refine] q\nProgram:\nx = 1"}}
    assert B.input_text(refine) == "[pot:refine] q\nProgram:\nx = 1"


def test_schedules():
    sched = make_schedule(OptimConfig(learning_rate=1.0, warmup_steps=10, schedule="cosine"), 110)
    assert float(sched(0)) == 0.0 and float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0) and float(sched(110)) == pytest.approx(0.0, abs=1e-6)
    lin = make_schedule(OptimConfig(learning_rate=2.0, schedule="linear", end_lr_factor=0.5), 100)
    assert float(lin(100)) == pytest.approx(1.0)
    rs = make_schedule(OptimConfig(learning_rate=1.0, warmup_steps=100, schedule="rsqrt"), 1000)
    assert float(rs(100)) == pytest.approx(1.0) and float(rs(400 - 100 + 100)) == pytest.approx(0.5, rel=1e-6)


def test_adamw_matches_torch_semantics_exactly():
    """Decoupled decay scaled by lr and eps outside the sqrt, as torch.optim.AdamW."""
    rng = np.random.default_rng(0)
    w0, target = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    cfg = OptimConfig(learning_rate=0.05, schedule="constant", weight_decay=0.1, eps=1e-3, b2=0.99,
                      clip_norm=None, no_decay="")
    tx, _ = make_optimizer(cfg, 10)
    params = {"w": jnp.asarray(w0)}
    state = tx.init(params)
    tw = torch.tensor(w0, requires_grad=True)
    topt = torch.optim.AdamW([tw], lr=0.05, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.1)
    for _ in range(6):
        grads = jax.grad(lambda p: jnp.sum((p["w"] - target) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        topt.zero_grad()
        torch.sum((tw - torch.tensor(target)) ** 2).backward()
        topt.step()
    np.testing.assert_allclose(np.asarray(params["w"]), tw.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_config_errors_name_the_key(tmp_path):
    base = ["run_dir=" + str(tmp_path), "steps=3"]
    with pytest.raises(ConfigError, match="optim.*learning_rate must be > 0"):
        load(TrainConfig, None, base + ["optim.learning_rate=-1"])
    with pytest.raises(ConfigError, match="unknown config key 'optim.lerning_rate'.*learning_rate"):
        load(TrainConfig, None, base + ["optim.lerning_rate=1"])
    with pytest.raises(ConfigError, match="exactly one of steps / epochs"):
        load(TrainConfig, None, base + ["epochs=2"])
    with pytest.raises(ConfigError, match="multiple of optim.grad_accum"):
        load(TrainConfig, None, base + ["batch_size=6", "optim.grad_accum=4"])
    with pytest.raises(ConfigError, match="config file not found"):
        load(TrainConfig, tmp_path / "nope.yaml")


def test_suggested_buckets_fit_the_data_and_cut_padding():
    rng = np.random.default_rng(0)
    lens = rng.lognormal(4.5, 0.4, size=(500, 2)).astype(int) + 2
    encoded = [([1] * a, [1] * b) for a, b in lens]
    buckets = B.suggest_buckets(encoded, 4)
    assert len(buckets) == 4 and all(b[0] % 8 == 0 and b[1] % 8 == 0 for b in buckets)
    records = [{"style": "pot", "meta": {}}] * len(encoded)
    ex, st = B.tokenize(records, None, B.DataConfig(), buckets, encoded)
    assert st["truncated"] == 0 and len(ex) == 500
    padded = sum(sum(buckets[e.bucket]) for e in ex)
    one_bucket = 500 * sum(buckets[-1])
    assert padded < 0.75 * one_bucket

