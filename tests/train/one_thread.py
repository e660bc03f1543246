"""An autouse fixture for modules that train tiny models: one torch thread.
Tiny models gain nothing from more, and on a busy 2-core machine extra
threads only wait for each other. Import it into a conftest or test module."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
