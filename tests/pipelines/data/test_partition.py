"""Epoch order, assignment and resume arithmetic, checked without processes."""

import itertools

import numpy as np
import pytest

from augtrain.pipelines.data.partition import (
    EpochLayout, normalize, sample_order, size, split_balanced, subtract, take_prefix,
)

COUNTS = (7, 0, 13, 5, 9, 11)


def positions(layout: EpochLayout, intervals):
    """(shard, position-in-file) for each global position, in order."""
    out = []
    for piece in layout.pieces(intervals):
        order = sample_order(layout.counts[piece.shard], layout.seed, layout.epoch, piece.shard, layout.shuffle)
        out += [(piece.shard, int(order[j])) for j in range(piece.start, piece.end)]
    return out


def test_global_order_covers_every_sample_once():
    layout = EpochLayout(COUNTS, seed=3, epoch=1)
    seen = positions(layout, [(0, layout.total)])
    assert len(seen) == sum(COUNTS) == layout.total
    assert set(seen) == {(s, i) for s, n in enumerate(COUNTS) for i in range(n)}


def test_same_seed_same_order_other_seed_or_epoch_other_order():
    a = positions(EpochLayout(COUNTS, 3, 1), [(0, 45)])
    assert a == positions(EpochLayout(COUNTS, 3, 1), [(0, 45)])
    assert a != positions(EpochLayout(COUNTS, 4, 1), [(0, 45)])
    assert a != positions(EpochLayout(COUNTS, 3, 2), [(0, 45)])
    assert positions(EpochLayout(COUNTS, 3, 1, shuffle=False), [(0, 45)])[:7] == [(0, i) for i in range(7)]


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_workers_get_disjoint_balanced_slices_whose_union_is_the_epoch(world):
    layout = EpochLayout(COUNTS, seed=0, epoch=0)
    slices = [layout.assignment([], r, world) for r in range(world)]
    sizes = [size(s) for s in slices]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == layout.total
    assert normalize([i for s in slices for i in s]) == [(0, layout.total)]
    seen = [p for s in slices for p in positions(layout, s)]
    assert len(seen) == len(set(seen)) == layout.total


@pytest.mark.parametrize("world_before,world_after", list(itertools.product([1, 2, 3], [1, 2, 4])))
def test_resume_with_any_worker_count_sees_each_remaining_sample_exactly_once(world_before, world_after):
    layout = EpochLayout(COUNTS, seed=5, epoch=2)
    rng = np.random.default_rng(0)
    consumed = []
    for r in range(world_before):  # each worker consumed some prefix of its slice
        mine = layout.assignment([], r, world_before)
        consumed += take_prefix(mine, int(rng.integers(0, size(mine) + 1)))
    before = [p for i in normalize(consumed) for p in positions(layout, [i])]
    after = [p for r in range(world_after) for p in positions(layout, layout.assignment(consumed, r, world_after))]
    assert len(before) + len(after) == layout.total
    assert len(set(before) | set(after)) == layout.total


def test_same_world_size_resume_continues_each_workers_own_slice():
    layout = EpochLayout(COUNTS, seed=1, epoch=0)
    first = [layout.assignment([], r, 2) for r in range(2)]
    consumed = take_prefix(first[0], 4) + take_prefix(first[1], 6)
    for r in range(2):
        resumed = layout.assignment(consumed, r, 2, base=[])
        assert positions(layout, resumed) == positions(layout, first[r])[(4, 6)[r]:]


def test_interval_helpers():
    assert normalize([(5, 7), (0, 2), (2, 3), (6, 9), (4, 4)]) == [(0, 3), (5, 9)]
    assert subtract(10, [(2, 4), (6, 7)]) == [(0, 2), (4, 6), (7, 10)]
    assert split_balanced([(0, 3), (5, 9)], 3) == [[(0, 2)], [(2, 3), (5, 6)], [(6, 9)]]
    with pytest.raises(ValueError, match="world_size"):
        split_balanced([(0, 3)], 0)


def test_position_keeps_slices_for_the_same_worker_count_and_resplits_for_another():
    from augtrain.pipelines.data.position import DataPosition, RankProgress

    layout = EpochLayout(COUNTS, seed=2, epoch=0)
    start = DataPosition(epoch=0, seed=2)
    slices = [layout.assignment(start.consumed, r, 2, start.base_for(2)) for r in range(2)]
    p1 = start.merged([RankProgress(0, 2, 2, take_prefix(slices[r], (3, 8)[r])) for r in range(2)])
    assert (p1.world_size, p1.samples_consumed) == (2, 11)
    again = [layout.assignment(p1.consumed, r, 2, p1.base_for(2)) for r in range(2)]
    assert [size(a) for a in again] == [size(slices[0]) - 3, size(slices[1]) - 8]
    three = [layout.assignment(p1.consumed, r, 3, p1.base_for(3)) for r in range(3)]
    assert sum(size(a) for a in three) == layout.total - 11
    p2 = p1.merged([RankProgress(0, 2, 3, take_prefix(three[r], 2)) for r in range(3)])
    assert (p2.world_size, p2.base, p2.samples_consumed) == (3, p1.consumed, 17)
    assert DataPosition.from_state_dict(p2.state_dict()) == p2
    with pytest.raises(ValueError, match="every worker"):
        p1.merged([RankProgress(0, 2, 2, [])])
