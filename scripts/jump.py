"""jump: flag cosmic-ray jumps in even ramps with the two-point difference method.

Seed, "Jump Detection for Even Ramps" (Anderson & Gordon 2011): per pixel, the
first differences of the ramp are compared with their clipped median (the
largest difference dropped); a difference whose distance from the median, in
units of its expected noise (Poisson from the median, via the gain, plus read
noise), is the largest and above the threshold flags JUMP_DET on the group at
its end; the search repeats without that difference until no new jump is found
or one difference is left. SATURATED and DO_NOT_USE groups are never used nor
flagged. Pixels with a non-positive or NaN gain get NO_GAIN_VALUE|DO_NOT_USE in
PIXELDQ. Ramps of fewer than 3 groups skip the step; uneven ramps (resultants
averaging several reads) are refused: ramp fitting detects their jumps.

    python scripts/jump.py r..._darkcurrent.asdf r..._jump.asdf [--rejection-threshold 4] \\
        [--maximum-cores half] [--override-gain FILE] [--override-readnoise FILE]
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from romanpipe import cli, dqflags
from romanpipe.cores import worker_count
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE, SKIPPED, open_model
from romanpipe.steprun import StepRun, run_script

import numpy as np
from roman_datamodels import datamodels

log = logging.getLogger("jump")

STEP = "jump"
INPUT_MODELS = (datamodels.RampModel,)
MINIMUM_GROUPS = 3  # two first differences: the fewest the method can compare
# Values (groups x pixels) of one row chunk: each float32 work array of a worker stays near
# 32 MB whatever the detector size and ramp length.
VALUES_PER_CHUNK = 8 * 2**20


@dataclass(frozen=True)
class Thresholds:
    """Rejection thresholds (sigma) by the number of usable differences, and the neighbour limits."""

    five_or_more_groups: float
    four_groups: float
    three_groups: float
    flag_4_neighbors: bool
    max_jump_to_flag_neighbors: float
    min_jump_to_flag_neighbors: float

    def for_usable_differences(self, count: np.ndarray) -> np.ndarray:
        """Threshold of each pixel; infinite (nothing to compare) below two differences."""
        return np.select([count >= 4, count == 3, count == 2],
                         [self.five_or_more_groups, self.four_groups, self.three_groups], np.inf)


def check_even_read_pattern(read_pattern, nresultants: int) -> None:
    """ValueError naming the problem unless every resultant is one read, all equally spaced."""
    if len(read_pattern) != nresultants:
        raise ValueError(f"read_pattern has {len(read_pattern)} resultants, the data {nresultants}")
    for index, reads in enumerate(read_pattern):
        if len(reads) != 1:
            raise ValueError(f"uneven ramp: resultant {index} averages {len(reads)} reads")
    spacings = set(np.diff([reads[0] for reads in read_pattern]).tolist())
    if len(spacings) > 1:
        raise ValueError(f"uneven ramp: reads {[reads[0] for reads in read_pattern]} are not equally spaced")


def clipped_median(sorted_values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The clipped median of each row of ``sorted_values`` (ascending, unusable NaN at the end).

    The romancal documentation, section "Jump Detection" (Two-Point Difference Method).

    ``usable`` values per row: 4 or more -> median without the largest; 3 -> plain
    median; 2 -> the smaller (the larger is what gets compared); fewer -> NaN.
    """
    kept = np.where(usable >= 4, usable - 1, np.where(usable == 3, 3, 1))
    low = np.take_along_axis(sorted_values, ((kept - 1) // 2)[:, None], axis=1)[:, 0]
    high = np.take_along_axis(sorted_values, (kept // 2)[:, None], axis=1)[:, 0]
    median = np.float32(0.5) * (low + high)
    return np.where(usable >= 2, median, np.float32(np.nan))


def difference_noise(median_electrons: np.ndarray, read_noise_electrons: np.ndarray) -> np.ndarray:
    """Expected noise (e) of one first difference of single-read resultants.

    Poisson variance is the charge collected between the two reads (the median
    difference); each of the two reads adds its read noise, hence twice its variance.
    """
    return np.sqrt(np.abs(median_electrons) + 2 * np.square(read_noise_electrons))


def find_primary_jumps(differences: np.ndarray, read_noise_electrons: np.ndarray, thresholds: Thresholds):
    """Every jump of each pixel: iterate the two-point test, dropping each difference that jumped.

    differences (npixels, ndifferences) e, NaN where unusable; read_noise_electrons
    (npixels,). Returns (pixel, difference, ratio) arrays, one entry per jump. Each
    pass works only on the pixels that jumped in the previous one. Inputs are not modified.
    """
    pixels = np.arange(differences.shape[0])
    values, read_noise = differences, read_noise_electrons
    found_pixels, found_differences, found_ratios = [], [], []
    while pixels.size:
        usable = np.count_nonzero(~np.isnan(values), axis=1)
        median = clipped_median(np.sort(values, axis=1), usable)
        noise = difference_noise(median, read_noise)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.abs(values - median[:, None]) / noise[:, None]
        # Unusable differences (NaN) can never be the largest; a zero or NaN noise means no test.
        ratio = np.where(np.isnan(ratio), np.float32(-1), ratio)
        largest = np.argmax(ratio, axis=1)
        largest_ratio = ratio[np.arange(pixels.size), largest]
        testable = np.isfinite(noise) & (noise > 0)
        jumped = testable & (largest_ratio > thresholds.for_usable_differences(usable))
        found_pixels.append(pixels[jumped])
        found_differences.append(largest[jumped])
        found_ratios.append(largest_ratio[jumped])
        pixels, values, read_noise = pixels[jumped], values[jumped], read_noise[jumped]
        values[np.arange(pixels.size), largest[jumped]] = np.nan  # values is a fresh copy here
    return np.concatenate(found_pixels), np.concatenate(found_differences), np.concatenate(found_ratios)


def bad_gain_mask(gain: np.ndarray) -> np.ndarray:
    """Pixels whose gain cannot turn DN into electrons: non-positive, NaN (or infinite)."""
    return ~(np.isfinite(gain) & (gain > 0))


def _jumps_in_rows(data, groupdq, gain, read_noise, thresholds: Thresholds, unusable_bits: int):
    """Primary jumps (ngroups, nrows, ncols) and those whose neighbours get flagged, for a row block."""
    ngroups, nrows, ncols = data.shape
    usable_groups = (groupdq & np.uint8(unusable_bits)) == 0
    usable_differences = usable_groups[1:] & usable_groups[:-1] & ~bad_gain_mask(gain)
    differences = np.diff(np.asarray(data, dtype=np.float32), axis=0)
    differences *= gain.astype(np.float32)
    differences[~usable_differences] = np.nan
    # One pixel per row, its differences contiguous: sorting runs along memory.
    per_pixel = np.ascontiguousarray(differences.reshape(ngroups - 1, -1).T)
    del differences
    read_noise_electrons = (read_noise.astype(np.float32) * gain.astype(np.float32)).reshape(-1)
    pixels, difference_index, ratio = find_primary_jumps(per_pixel, read_noise_electrons, thresholds)

    primary = np.zeros((ngroups, nrows * ncols), dtype=bool)
    primary[difference_index + 1, pixels] = True  # a difference's jump belongs to its later group
    spreading = np.zeros_like(primary)
    if thresholds.flag_4_neighbors:
        strong = ((ratio >= thresholds.min_jump_to_flag_neighbors)
                  & (ratio <= thresholds.max_jump_to_flag_neighbors))
        spreading[difference_index[strong] + 1, pixels[strong]] = True
    return primary.reshape(data.shape), spreading.reshape(data.shape)


def _four_neighbours(mask: np.ndarray) -> np.ndarray:
    """Pixels above, below, left and right of any True pixel of each (nrows, ncols) plane."""
    spread = np.zeros_like(mask)
    spread[:, 1:] |= mask[:, :-1]
    spread[:, :-1] |= mask[:, 1:]
    spread[:, :, 1:] |= mask[:, :, :-1]
    spread[:, :, :-1] |= mask[:, :, 1:]
    return spread


def detect_jumps(data, groupdq, pixeldq, gain, read_noise, *, rejection_threshold=4.0,
                 three_group_rejection_threshold=6.0, four_group_rejection_threshold=5.0,
                 flag_4_neighbors=True, max_jump_to_flag_neighbors=1000.0,
                 min_jump_to_flag_neighbors=10.0, workers=1, rows_per_chunk=None,
                 flags=dqflags.pixel):
    """New GROUPDQ and PIXELDQ with JUMP_DET and NO_GAIN_VALUE flags. Inputs are not modified.

    data (ngroups, nrows, ncols) DN of single-read resultants; groupdq likewise;
    pixeldq, gain (e/DN) and read_noise (DN per read) (nrows, ncols). The rows are
    processed in chunks by ``workers`` threads; a chunk also computes the row on
    each side, so that neighbour flags cross chunk borders and the result never
    depends on the chunking or on the number of workers.
    """
    ngroups, nrows, ncols = data.shape
    if ngroups < MINIMUM_GROUPS:
        raise ValueError(f"{ngroups} groups: the two-point difference method needs at least {MINIMUM_GROUPS}")
    for name, array in (("GAIN", gain), ("READNOISE", read_noise), ("pixeldq", pixeldq)):
        if array.shape != (nrows, ncols):
            raise ValueError(f"{name} has shape {array.shape}, the ramp {(nrows, ncols)}")
    if groupdq.shape != data.shape:
        raise ValueError(f"groupdq has shape {groupdq.shape}, the data {data.shape}")
    thresholds = Thresholds(
        five_or_more_groups=rejection_threshold, four_groups=four_group_rejection_threshold,
        three_groups=three_group_rejection_threshold, flag_4_neighbors=flag_4_neighbors,
        max_jump_to_flag_neighbors=max_jump_to_flag_neighbors,
        min_jump_to_flag_neighbors=min_jump_to_flag_neighbors)
    unusable_bits = int(flags["SATURATED"] | flags["DO_NOT_USE"])
    jump_flag = np.uint8(flags["JUMP_DET"])
    rows_per_chunk = rows_per_chunk or max(1, VALUES_PER_CHUNK // (ngroups * ncols))
    halo = 1 if flag_4_neighbors else 0

    new_groupdq = np.array(groupdq, dtype=np.uint8, copy=True)
    bad_gain = bad_gain_mask(gain)
    new_pixeldq = pixeldq.astype(np.uint32, copy=True)
    new_pixeldq[bad_gain] |= np.uint32(flags["NO_GAIN_VALUE"] | flags["DO_NOT_USE"])

    def flag_rows(start: int) -> tuple[int, int]:
        stop = min(start + rows_per_chunk, nrows)
        low, high = max(start - halo, 0), min(stop + halo, nrows)
        primary, spreading = _jumps_in_rows(data[:, low:high], groupdq[:, low:high], gain[low:high],
                                            read_noise[low:high], thresholds, unusable_bits)
        own = slice(start - low, stop - low)
        primary = primary[:, own]
        neighbours = _four_neighbours(spreading)[:, own] & ~primary
        neighbours &= (groupdq[:, start:stop] & np.uint8(unusable_bits)) == 0
        new_groupdq[:, start:stop] |= (primary | neighbours).astype(np.uint8) * jump_flag
        return int(np.count_nonzero(primary)), int(np.count_nonzero(neighbours))

    began = time.perf_counter()
    starts = range(0, nrows, rows_per_chunk)
    workers = max(1, min(workers, len(starts)))
    if workers == 1:
        counts = [flag_rows(start) for start in starts]
    else:
        # numpy releases the GIL in the sorts and array arithmetic that dominate a chunk.
        with ThreadPoolExecutor(workers) as pool:
            counts = list(pool.map(flag_rows, starts))
    primaries, neighbours = (sum(column) for column in zip(*counts, strict=True))
    log.info("%d jumps flagged, %d more as their neighbours; %d pixels without a usable gain "
             "(%d row chunks, %d workers, %.1f s)", primaries, neighbours, int(np.count_nonzero(bad_gain)),
             len(starts), workers, time.perf_counter() - began)
    return new_groupdq, new_pixeldq


def run(ramp, step: StepRun):
    """Flag jumps in ``ramp`` (an even RampModel, updated and returned); SKIPPED below 3 groups."""
    parameters = step.parameters
    data = np.asarray(ramp.data)
    try:
        check_even_read_pattern([list(reads) for reads in ramp.meta.exposure.read_pattern], data.shape[0])
    except ValueError as err:
        raise InputFileError(step.input, f"{err}; the jump step takes only even ramps, use the jump "
                                         "detection of ramp fitting (use_ramp_jump_detection)") from None
    if data.shape[0] < MINIMUM_GROUPS:
        log.info("step skipped: %d groups, the two-point difference method needs at least %d",
                 data.shape[0], MINIMUM_GROUPS)
        return ramp, SKIPPED
    with (open_model(step.reference("gain"), (datamodels.GainRefModel,)) as gain,
          open_model(step.reference("readnoise"), (datamodels.ReadnoiseRefModel,)) as readnoise):
        try:
            ramp.groupdq, ramp.pixeldq = detect_jumps(
                data, np.asarray(ramp.groupdq), np.asarray(ramp.pixeldq),
                np.asarray(gain.data, dtype=np.float32), np.asarray(readnoise.data, dtype=np.float32),
                rejection_threshold=parameters["rejection_threshold"],
                three_group_rejection_threshold=parameters["three_group_rejection_threshold"],
                four_group_rejection_threshold=parameters["four_group_rejection_threshold"],
                flag_4_neighbors=parameters["flag_4_neighbors"],
                max_jump_to_flag_neighbors=parameters["max_jump_to_flag_neighbors"],
                min_jump_to_flag_neighbors=parameters["min_jump_to_flag_neighbors"],
                workers=worker_count(parameters["maximum_cores"]))
        except ValueError as err:
            raise InputFileError(step.input, str(err)) from None
    return ramp, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
