"""distill_jax: teach small T5 students to solve math word problems by distilling a large teacher.

Subpackages: data, reasoning and teacher import no JAX; model, train, evaluate and methods do.
"""
__version__ = "0.1.0"
