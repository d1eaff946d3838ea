"""Shared fixtures: tiny, fast objects for unit tests on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from dfworld.world.config import WorldConfig
from dfworld.world.simulator import EventWorld


@pytest.fixture
def world() -> EventWorld:
    return EventWorld(WorldConfig())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
