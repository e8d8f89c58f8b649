"""Everything about a rationale's text and its answer: extraction, sandboxed programs, equations. No JAX."""
