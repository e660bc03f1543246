"""One torch thread for these tests: tiny models gain nothing from more,
and on a busy 2-core machine extra threads only wait for each other."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
