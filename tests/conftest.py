import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(1)  # tiny models: threads cost more than they give


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def served_checkpoints(tmp_path_factory):
    """The three small trained checkpoints the server's tests load (tests/served_models.py)."""
    from served_models import train_all

    return train_all(tmp_path_factory.mktemp("served"))
