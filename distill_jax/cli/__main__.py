"""`python -m distill_jax.cli VERB ...`, the same as the `distill-jax` console script."""
import sys

from distill_jax.cli import main

sys.exit(main())
