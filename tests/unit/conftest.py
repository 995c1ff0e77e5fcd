"""Fixtures shared by the unit tests of the simulator, the served-run prediction and the bench client's arrivals."""

from __future__ import annotations

import json

import pytest

from tests.support.tiny_models import TINY


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The path of TINY's config.json (tests/support/tiny_models.py), as a user's own config would be given."""
    path = tmp_path_factory.mktemp("tiny") / "config.json"
    path.write_text(json.dumps(TINY))
    return str(path)
