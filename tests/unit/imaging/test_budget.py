"""The decode budget: a byte-weighted, first-come-first-served semaphore."""

from __future__ import annotations

import threading
import time

from tagger.imaging.budget import DecodeBudget


def test_budget_reservations_wait_for_room_first_come_first_served() -> None:
    budget = DecodeBudget(100)
    order: list[str] = []

    def take(name: str, nbytes: int) -> None:
        with budget.reserve(nbytes):
            order.append(name)

    with budget.reserve(80):
        big = threading.Thread(target=take, args=("big", 60))
        big.start()
        time.sleep(0.05)
        small = threading.Thread(target=take, args=("small", 10))  # fits, but queues behind
        small.start()
        time.sleep(0.1)
        assert order == [] and budget.in_use == 80
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]
    assert budget.in_use == 0
    assert budget.peak <= 100
    with budget.reserve(10**12) as held:  # more than the budget: waits to run alone
        assert held == 100
