"""Fixtures shared by the core tests: both implementations, and segments removed after use."""
import pytest

from fastinfer._core import shm as compiled
from fastinfer._core.ref import shm as reference
from shm_helpers import SegmentMaker


@pytest.fixture(params=[compiled, reference], ids=["compiled", "ref"])
def impl(request):
    """The compiled core, then its pure-Python reference: a test that uses it runs on both."""
    return request.param


@pytest.fixture
def segments(impl):
    """Makes segments of ``impl`` (``segments(n_workers, deployments, ..., **layout)``) and
    removes every one of them after the test."""
    maker = SegmentMaker(impl, "fi-core")
    yield maker
    maker.cleanup()
