"""The training thread governor: all cores while the rest of the machine is idle, one otherwise."""

from __future__ import annotations

import pytest

import workers.threads as threads


@pytest.fixture
def clock(monkeypatch):
    """A fake machine: wall time, all processes' busy CPU seconds, and this process's own."""
    state = {"wall": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(threads.time, "perf_counter", lambda: state["wall"])
    monkeypatch.setattr(threads, "_busy_seconds", lambda: state["busy"])
    monkeypatch.setattr(threads, "_own_seconds", lambda: state["own"])
    return state


def run_step(state, seconds: float, own_cores: float, other_cores: float) -> None:
    state["wall"] += seconds
    state["own"] += seconds * own_cores
    state["busy"] += seconds * (own_cores + other_cores)


def test_two_threads_on_an_idle_machine_and_one_while_another_process_computes(clock):
    import torch

    before = torch.get_num_threads()
    try:
        gov = threads.ThreadGovernor(most=2)
        assert torch.get_num_threads() == 1  # the first step runs on one thread
        run_step(clock, 1.0, own_cores=1.0, other_cores=0.1)
        assert gov.step() == 2 and torch.get_num_threads() == 2
        run_step(clock, 1.0, own_cores=1.6, other_cores=0.9)  # the chat took a core
        assert gov.step() == 1 and torch.get_num_threads() == 1
        run_step(clock, 1.0, own_cores=1.0, other_cores=0.0)
        assert gov.step() == 2
        assert gov.history == [2, 1, 2]
    finally:
        torch.set_num_threads(before)


def test_one_thread_where_the_machine_cannot_be_read(clock, monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "_busy_seconds", lambda: None)
        gov = threads.ThreadGovernor(most=2)
        run_step(clock, 1.0, own_cores=1.0, other_cores=0.0)
        assert gov.step() == 1
    finally:
        torch.set_num_threads(before)


def test_busy_seconds_reads_this_machine():
    first = threads._busy_seconds()
    if first is None:
        pytest.skip("no /proc/stat here")
    sum(i * i for i in range(200_000))  # some CPU work
    assert threads._busy_seconds() >= first
