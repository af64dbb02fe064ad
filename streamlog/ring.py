"""The hot tier: the newest records of one stream, addressed by sequence number.

One writer thread appends; any number of reader threads read without a lock.
Under the GIL each slot store and counter update is atomic, and the writer
moves :attr:`Ring.low` past a slot *before* overwriting it, so a reader that
fetched a slot and then still sees ``seq >= low`` holds the right entry.
"""


class Ring:
    """Entries ``(record_key, record)`` for sequence numbers ``low..high``.

    ``capacity=None`` keeps every entry (unbounded).  ``high`` is -1 while
    empty.  The ring never decides what may be evicted: callers size it so that
    an evicted entry is already safe on disk.
    """

    def __init__(self, capacity, first_seq=0):
        if capacity is not None and capacity < 1:
            raise ValueError(f"ring capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._slots = [None] * capacity if capacity is not None else []
        self._base = first_seq
        self.low = first_seq
        self.high = first_seq - 1

    def append(self, entry):
        """Store ``entry`` under sequence number ``high + 1``."""
        seq = self.high + 1
        capacity = self.capacity
        if capacity is None:
            self._slots.append(entry)
        else:
            if seq - self.low >= capacity:
                self.low = seq - capacity + 1
            self._slots[seq % capacity] = entry
        self.high = seq

    def extend(self, entries):
        """Append several entries; readers see them all once ``high`` moves."""
        capacity = self.capacity
        seq = self.high
        if capacity is None:
            self._slots.extend(entries)
            self.high = seq + len(entries)
            return
        slots = self._slots
        newest = seq + len(entries)
        if newest - self.low >= capacity:
            self.low = newest - capacity + 1
        if len(entries) > capacity:
            seq += len(entries) - capacity
            entries = entries[-capacity:]
        start = (seq + 1) % capacity
        first = capacity - start  # how many fit before the end of the slots
        slots[start:start + len(entries)] = entries[:first]
        if len(entries) > first:
            slots[:len(entries) - first] = entries[first:]
        self.high = newest

    def get(self, seq):
        """The entry for ``seq``, or None if it is not (or no longer) in the ring."""
        if seq > self.high:
            return None
        if self.capacity is None:
            if seq < self.low:
                return None
            return self._slots[seq - self._base]
        entry = self._slots[seq % self.capacity]
        if seq < self.low:
            return None
        return entry

    def slice(self, seq, limit):
        """Up to ``limit`` consecutive entries from ``seq`` on ([] if ``seq`` is not in the ring)."""
        high = self.high
        if seq > high or seq < self.low:
            return []
        stop = min(high + 1, seq + limit)
        capacity = self.capacity
        if capacity is None:
            return self._slots[seq - self._base:stop - self._base]
        start, end = seq % capacity, stop % capacity
        if start < end or stop - seq == 0:
            entries = self._slots[start:end]
        else:
            entries = self._slots[start:] + self._slots[:end]
        if self.low > seq:  # the writer overwrote part of what was copied
            return []
        return entries

    def __len__(self):
        return self.high - self.low + 1
