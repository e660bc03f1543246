"""Tests here train tiny models: one torch thread."""
from tests.train.one_thread import one_thread  # noqa: F401
