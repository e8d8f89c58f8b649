"""Shared fixtures. The benchmark data directory comes from DISTILL_JAX_DATA (scripts/test.sh sets it)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: heavy end-to-end tests (CI still runs them)")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data. Missing data is a failure, never a skip: CI must not pass by testing nothing."""
    value = os.environ.get("DISTILL_JAX_DATA")
    if not value:
        pytest.fail("DISTILL_JAX_DATA is not set: run the tests through scripts/test.sh or point it at the data")
    path = Path(value)
    if not (path / "gsm8k" / "train.jsonl").is_file():
        pytest.fail(f"DISTILL_JAX_DATA={path} does not hold gsm8k/train.jsonl")
    return path
