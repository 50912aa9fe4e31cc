"""Run the model tests single-threaded.

On the shared 2-core CI machine, intra-op threads contend with other processes and a batch-2 forward of
the zoo ran about 20x slower with 2 threads than with 1 (measured: 19 s vs 0.9 s for all models).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
