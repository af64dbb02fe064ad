"""The ring: the newest ``capacity`` entries by sequence number, appended one
at a time or many at once, wrapping around its slots."""

import pytest

from streamlog.ring import Ring


@pytest.mark.parametrize("capacity", [1, 3, 8, None])
@pytest.mark.parametrize("sizes", [[1], [2, 5], [7, 1, 8, 9, 3], [20, 1]])
def test_get_and_slice_hold_exactly_the_newest_capacity_entries(capacity, sizes):
    ring, high = Ring(capacity), -1
    for _ in range(12):
        for size in sizes:
            entries = [("key", seq) for seq in range(high + 1, high + 1 + size)]
            if size == 1:
                ring.append(entries[0])
            else:
                ring.extend(entries)
            high += size
            low = 0 if capacity is None else max(0, high - capacity + 1)
            assert (ring.low, ring.high, len(ring)) == (low, high, high - low + 1)
            for seq in range(max(0, low - 2), high + 2):
                inside = low <= seq <= high
                assert ring.get(seq) == (("key", seq) if inside else None)
                expected = [("key", s) for s in range(seq, min(seq + 4, high + 1))] if inside else []
                assert ring.slice(seq, 4) == expected


def test_capacity_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Ring(0)
