"""The suite's own parallel order (tests/conftest.py): every pytest-xdist worker starts on its
share of the long tests, and no test is lost or repeated."""

from __future__ import annotations

from tests.conftest import spread_long_tests


class _Item:
    def __init__(self, name: str, marker: str | None = None):
        self.name, self.marker = name, marker

    def get_closest_marker(self, name: str):
        return name if name == self.marker else None


def _chunks(order: list, workers: int) -> list[list]:
    """What ``--dist worksteal`` first hands each worker."""
    out, pending = [], list(order)
    for i in range(workers):
        size = len(pending) // (workers - i)
        out.append(pending[:size])
        pending = pending[size:]
    return out


def test_each_worker_starts_with_its_share_of_slurm_then_slow_tests():
    items = [_Item(f"unit{i}") for i in range(40)]
    items[10:10] = [_Item(f"slurm{i}", "slurm") for i in range(6)]  # one file, together
    items += [_Item(f"slow{i}", "slow") for i in range(5)]
    order = spread_long_tests(items, 4)
    assert sorted(x.name for x in order) == sorted(x.name for x in items)
    chunks = _chunks(order, 4)
    slurm_per_worker = [sum(x.marker == "slurm" for x in c) for c in chunks]
    assert slurm_per_worker == [2, 2, 1, 1]
    for chunk in chunks:  # the long tests first, SLURM before slow
        kinds = [x.marker or "unit" for x in chunk]
        assert kinds == sorted(kinds, key=["slurm", "slow", "unit"].index)
        assert kinds[0] == "slurm"


def test_one_worker_or_no_long_tests_keep_every_test_once():
    items = [_Item(f"unit{i}") for i in range(7)]
    assert [x.name for x in spread_long_tests(items, 3)] == [x.name for x in items]
    one = [_Item("a", "slurm"), _Item("b"), _Item("c", "slow")]
    assert [x.name for x in spread_long_tests(one, 5)] == ["a", "c", "b"]
