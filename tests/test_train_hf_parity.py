"""Training parity with transformers: same initial weights, same batches, AdamW with the same hyperparameters.

Our train_step (jitted, on a 2-device data-parallel mesh) against HF PyTorch T5 + torch.optim.AdamW for 10
steps: the loss trajectories agree to 1e-3 relative. Both sides use the mean token cross-entropy over
labels != -100 (our weighted loss with every weight 1), weight decay on every parameter, no clipping,
a constant learning rate; the HF model stays in eval mode (no dropout) and ours has dropout_rate 0.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import torch
from helpers_hf import make_tiny_hf_t5
from helpers_train import random_batch

from distill_jax.model.hf import load_hf
from distill_jax.train import sharding as S
from distill_jax.train.optim import OptimConfig, make_optimizer
from distill_jax.train.state import init_state, state_shardings
from distill_jax.train.step import jit_train_step

VOCAB, STEPS, LR, WD, EPS = 200, 10, 2e-3, 0.01, 1e-8


def test_loss_trajectory_matches_hf_pytorch_adamw(tmp_path):
    hf_dir, torch_model = make_tiny_hf_t5(tmp_path, "v1_1", seed=1, vocab_size=VOCAB, d_model=32, num_heads=4)
    config, params = load_hf(hf_dir)
    config = dataclasses.replace(config, dropout_rate=0.0)
    rng = np.random.default_rng(7)
    # two batches in turn: a model can fit them within 10 steps, so the trajectory really moves
    batches = [random_batch(rng, 8, 14, 12, VOCAB) for _ in range(2)] * (STEPS // 2)

    torch_opt = torch.optim.AdamW(torch_model.parameters(), lr=LR, betas=(0.9, 0.999), eps=EPS, weight_decay=WD)
    hf_losses = []
    for b in batches:
        out = torch_model(input_ids=torch.tensor(b["input_ids"], dtype=torch.long),
                          attention_mask=torch.tensor(b["attention_mask"], dtype=torch.long),
                          labels=torch.tensor(b["labels"], dtype=torch.long))
        torch_opt.zero_grad()
        out.loss.backward()
        torch_opt.step()
        hf_losses.append(out.loss.item())

    mesh = S.make_mesh(S.MeshConfig(data=2), jax.devices()[:2])
    tx, schedule = make_optimizer(OptimConfig(name="adamw", learning_rate=LR, schedule="constant", weight_decay=WD,
                                              eps=EPS, clip_norm=None, no_decay=""), STEPS)
    abstract = jax.eval_shape(lambda p: init_state(p, tx, 0), params)
    shardings = state_shardings(mesh, abstract)
    state = jax.jit(lambda p: init_state(p, tx, 0), out_shardings=shardings)(params)
    step = jit_train_step(config, tx, schedule, 1, shardings, S.batch_sharding(mesh))
    ours = []
    for b in batches:
        state, metrics = step(state, {k: jax.device_put(v, S.batch_sharding(mesh)) for k, v in b.items()})
        ours.append(float(metrics["loss"]))

    assert hf_losses[-1] < hf_losses[0] - 0.1, f"HF should be learning: {hf_losses}"
    np.testing.assert_allclose(ours, hf_losses, rtol=1e-3, err_msg=f"ours {ours}\nhf {hf_losses}")
    # the weights moved the same way too (the head, the last thing either side updates)
    head = torch_model.lm_head.weight.detach().numpy().T
    np.testing.assert_allclose(np.asarray(state.params["lm_head"]["kernel"]), head, rtol=1e-2, atol=1e-4)
