from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harmonrank.study.simulate import SimulatorConfig, simulate


@pytest.fixture(scope="session")
def sim_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated dataset (20k rows, 2 row groups) shared by the tests."""
    path = tmp_path_factory.mktemp("sim") / "sim.parquet"
    simulate(path, SimulatorConfig(rows=20_000, seed=3, chunk_rows=10_000))
    return path


@pytest.fixture(scope="session")
def splits(sim_path: Path):  # type: ignore[no-untyped-def]
    """(train, valid, test) of the shared simulated dataset, split by time."""
    from harmonrank import load_config, read_table

    return read_table(sim_path, load_config(None)).split_by_time((0.6, 0.2, 0.2))
