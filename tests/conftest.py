import pytest
import torch

# One intra-op thread: the tests' tensors and networks are small, and on a small machine shared with other
# work two OpenMP threads spin-wait against each other (5 training steps of a small U-Net: 1.5 s on one
# thread, 40 s on two under load).
torch.set_num_threads(1)


@pytest.fixture
def f64():
    return torch.float64


@pytest.fixture
def one_thread():
    """Small tensors and tiny networks: one intra-op thread is as fast, and immune to OpenMP spin-waits
    when the 2 cores of a small machine are shared with other jobs (2 threads under load made a 13 ms
    call take 330 ms)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
