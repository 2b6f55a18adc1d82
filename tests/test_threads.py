"""The default CPU thread count: all cores on a quiet machine, fewer as the load grows, overridable."""

import pytest

from lethe import threads
from lethe.errors import LetheError


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)


def test_threads_follow_the_load(four_cores):
    assert threads.default_threads(load=0.0) == 4
    assert threads.default_threads(load=1.2) == 3
    assert threads.default_threads(load=3.0) == 1
    assert threads.default_threads(load=9.0) == 1  # never 0


def test_affinity_caps_the_cores(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.default_threads(load=0.0) == 2


def test_environment_override(four_cores, monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.default_threads(load=8.0) == 3
    monkeypatch.setenv(threads.ENV, "zero")
    with pytest.raises(LetheError, match="LETHE_THREADS"):
        threads.default_threads()


def test_apply_leaves_a_running_torch_alone(monkeypatch):
    import torch  # noqa: F401  (torch is imported: its thread count was already chosen)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.apply_default_threads() is None


def test_physical_cores_of_this_machine():
    cores = threads.physical_cores()
    assert cores is None or cores >= 1
    assert threads.available_cpus() >= 1
