from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harmonrank.simulate import SimulatorConfig, simulate


@pytest.fixture(scope="session")
def sim_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated dataset (20k rows, 2 row groups) shared by the tests."""
    path = tmp_path_factory.mktemp("sim") / "sim.parquet"
    simulate(path, SimulatorConfig(rows=20_000, seed=3, chunk_rows=10_000))
    return path
