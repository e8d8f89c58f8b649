"""Helpers for trying distill_jax without a real endpoint: a loopback OpenAI-compatible server (fake_server)."""
