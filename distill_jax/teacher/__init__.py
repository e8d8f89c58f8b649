"""The teacher: prompts, an OpenAI-compatible client, a durable cache, offline teachers. No JAX."""
