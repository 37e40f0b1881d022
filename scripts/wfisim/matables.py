"""Multi-accumulation (MA) tables: which detector reads are averaged into each resultant.

A read pattern is a list of resultants, each a list of 1-based read numbers.
Read ``k`` happens ``k * frame_time`` seconds after the reset, so the time of a
read follows from its number alone. Reads that belong to no resultant (gaps)
still accumulate charge but are not downlinked.

The uneven tables mimic real Roman imaging tables: a single first read for a
clean start, resultants averaging more and more reads as the ramp goes on
(averaging beats down read noise where the slope is already well measured),
and a single last read that pins down the end of the ramp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from romanpipe.readpattern import mean_read_times

FULL_FRAME_TIME = 3.04  # s, one read of the full 4096 x 4096 array


@dataclass(frozen=True)
class MaTable:
    """A named read pattern and the frame time it is read with."""

    name: str
    number: int
    read_pattern: tuple[tuple[int, ...], ...]
    frame_time: float = FULL_FRAME_TIME

    def __post_init__(self) -> None:
        reads = [read for resultant in self.read_pattern for read in resultant]
        if not reads or any(not resultant for resultant in self.read_pattern):
            raise ValueError(f"MA table {self.name}: every resultant needs at least one read")
        if reads[0] < 1 or any(later <= earlier for earlier, later in pairwise(reads)):
            raise ValueError(f"MA table {self.name}: read numbers must be >= 1 and increasing")

    @property
    def nresultants(self) -> int:
        return len(self.read_pattern)

    @property
    def last_read(self) -> int:
        return self.read_pattern[-1][-1]

    @property
    def exposure_time(self) -> float:
        """Seconds from the reset to the last read."""
        return self.last_read * self.frame_time

    @property
    def effective_exposure_time(self) -> float:
        """Time between the mean reads of the first and the last resultant: the slope's baseline."""
        times = mean_read_times(self.read_pattern, self.frame_time)
        return float(times[-1] - times[0])

    def read_pattern_lists(self) -> list[list[int]]:
        """The pattern as plain lists, the form ``meta.exposure.read_pattern`` stores."""
        return [list(resultant) for resultant in self.read_pattern]




def read_pattern_from_counts(counts: Sequence[int], first_read: int = 1) -> tuple[tuple[int, ...], ...]:
    """Consecutive reads grouped ``counts[i]`` at a time: ``[1, 2]`` -> ``((1,), (2, 3))``."""
    pattern, read = [], first_read
    for count in counts:
        pattern.append(tuple(range(read, read + count)))
        read += count
    return tuple(pattern)


def even_ma_table(nresultants: int, frame_time: float = FULL_FRAME_TIME) -> MaTable:
    """Every resultant a single read, as ground tests use (e.g. 55 resultants)."""
    return MaTable(f"EVEN_{nresultants}", 9000 + nresultants,
                   read_pattern_from_counts([1] * nresultants), frame_time)


MA_TABLES: dict[str, MaTable] = {
    table.name: table
    for table in (
        # 24 reads, 73 s: 1, 2, 4, 8, 8, 1 reads per resultant.
        MaTable("IMG_UNEVEN_6", 1001, read_pattern_from_counts([1, 2, 4, 8, 8, 1])),
        # 64 reads, 195 s: 1, 2, then 4-read resultants, 8-read ones near the end, 1.
        MaTable("IMG_UNEVEN_16", 1002,
                read_pattern_from_counts([1, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8, 1])),
        # 8 single reads, 24 s: the simplest ramp, handy for checking the physics.
        MaTable("IMG_EVEN_8", 1003, read_pattern_from_counts([1] * 8)),
    )
}


def ma_table(name: str) -> MaTable:
    """The table called ``name``; ``EVEN_<N>`` makes N single-read resultants on demand."""
    if name in MA_TABLES:
        return MA_TABLES[name]
    if name.upper().startswith("EVEN_") and name[5:].isdigit() and int(name[5:]) > 0:
        return even_ma_table(int(name[5:]))
    raise ValueError(f"unknown MA table {name!r}; known: {', '.join(MA_TABLES)}, EVEN_<N>")
