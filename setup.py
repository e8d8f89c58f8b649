"""distill_jax: distil math reasoning from a large teacher LLM into a small T5 student, in JAX."""
from setuptools import find_packages, setup

# Direct dependencies, pinned to the versions that resolve and were tested on the reference machine
# (../shared/FACTS.md). The teacher/data/reasoning side needs none of the JAX stack at import time.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "transformers==5.23.0",
    "datasets==5.2.0",
    "tokenizers==0.23.3",
    "sentencepiece==0.2.3",
    "safetensors==0.8.0",
    "protobuf==7.36.2",  # transformers builds a T5 tokenizer from spiece.model only with protobuf
    "sympy==1.14.0",
    "numpy==2.4.6",
    "ml_dtypes==0.6.0",  # bf16 safetensors in model/hf.py
    "pyyaml==6.0.3",
    "rich==15.0.0",
    "matplotlib==3.11.2",
    # The teacher's transport (teacher/transport.py). Its httpx client reads proxies and CA bundles from the
    # environment; the aiohttp extra is the lighter transport (`teacher.http_backend: aiohttp`).
    "openai[aiohttp]==3.51.0",
]

# Accelerator installs: JAX's own extras, pinned to the same jax, so the plugin / libtpu matches the jaxlib.
# scripts/_venv.sh picks one from DISTILL_JAX_ACCEL (or the hardware it finds).
JAX_VERSION = next(r.split("==")[1] for r in INSTALL_REQUIRES if r.startswith("jax=="))
ACCELERATOR_EXTRAS = {
    "cuda12": [f"jax[cuda12]=={JAX_VERSION}"],
    "cuda13": [f"jax[cuda13]=={JAX_VERSION}"],
    "tpu": [f"jax[tpu]=={JAX_VERSION}"],
}

setup(
    name="distill_jax",
    version="0.1.0",
    description="Distil math reasoning from a teacher LLM into a small Flax T5 student",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["distill_jax", "distill_jax.*"]),
    package_data={"distill_jax": ["teacher/prompt_files/*"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # torch is the CPU build (a local wheel here); it is only the reference for parity tests/benchmarks.
        # trustme makes the test CA for the teacher's HTTPS tests; tensorboardX is in the test extra so the
        # TensorBoard writer is tested too.
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "torch==2.13.0", "trustme==1.2.1", "tensorboardX==2.6.5"],
        "tensorboard": ["tensorboardX==2.6.5"],
        **ACCELERATOR_EXTRAS,
    },
    entry_points={"console_scripts": ["distill-jax=distill_jax.cli:main"]},
)
