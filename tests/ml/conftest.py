"""Small dataset fixtures shared by the ML tests (the rows live in ``tests.ml.datasets``)."""

from __future__ import annotations

import pytest

from tests.ml.datasets import write_dataset_dir


@pytest.fixture
def tiny_dataset_dir(tmp_path):
    """A valid dataset directory of 4 users, 2 communities, 5 posts and 12 interactions."""
    return write_dataset_dir(tmp_path / "tiny")
