"""Training: mesh and sharding rules, the pure train step, optimizers, batches, checkpoints, the loop."""
