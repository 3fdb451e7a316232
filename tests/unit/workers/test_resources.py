"""Worker processes split the cores instead of each starting a thread per core."""

from __future__ import annotations

import pytest

from tagger.config import ModelSettings, Settings, WorkerSettings
from workers.resources import threads_per_process


@pytest.mark.parametrize(
    ("cores", "processes", "expected"), [(2, 2, 1), (8, 2, 4), (2, 0, 1), (16, 3, 5), (2, 4, 1)]
)
def test_threads_are_shared_between_processes(
    monkeypatch: pytest.MonkeyPatch, cores: int, processes: int, expected: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    settings = Settings(worker=WorkerSettings(concurrency=processes))
    assert threads_per_process(settings).model.intra_op_threads == expected


def test_an_explicit_thread_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    settings = Settings(model=ModelSettings(intra_op_threads=3))
    assert threads_per_process(settings).model.intra_op_threads == 3
