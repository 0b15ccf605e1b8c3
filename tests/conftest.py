import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(1)  # tiny models: threads cost more than they give


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
