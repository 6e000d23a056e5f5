"""Shared pytest fixtures."""

import pytest
from tiny_models import TinyModels


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Tiny random transformers checkpoints saved like real ones, built on first use."""
    return TinyModels(tmp_path_factory.mktemp("tiny_models"))
