"""linearity: correct each resultant for the classic non-linear response of the detector.

Seed, "Linearity Correction": every resultant F (DN) becomes
F_c = sum_n c_n F^n with all the coefficient planes of the LINEARITY reference
(Horner's scheme). Pixels with a NaN coefficient, a linear coefficient c_1 of 0
(all-zero coefficients among them: the polynomial would flatten the ramp), or
NO_LIN_CORR in the reference DQ are left uncorrected and get NO_LIN_CORR in PIXELDQ,
as stcal does; resultants
flagged SATURATED in GROUPDQ are left as they are; the reference DQ is OR-ed
into PIXELDQ. A RampModel has no ERR array, so there is none to modify.

``resultant_aware`` (romancal 1.1's correction, stcal 1.20's read-level path): a resultant
is a mean of reads, and the polynomial of a mean is not the mean of the polynomials. Per
pixel the linearized first and last usable resultants (the last unsaturated one is left
out, it may hold a partly saturated read; at least the second) give a rate per read; each
resultant's reads are rebuilt on that line, turned back into raw DN by the
INVERSELINEARITY polynomial, shifted together so that their mean is the measured
resultant, corrected by the INTEGRALNONLINEARITY tables (per 128-column channel, a
correction interpolated in raw DN, added) and by the LINEARITY polynomial one by one, and
averaged. INVERSELINEARITY coefficients that are NaN, or whose linear term is 0, or pixels
NO_LIN_CORR in the LINEARITY DQ get the identity (and NO_LIN_CORR), as LINEARITY's do.
Corrected values beyond +-1e6 DN are clipped there and flagged DO_NOT_USE in GROUPDQ
(romancal 1.1 does so for implausible values). Without an INTEGRALNONLINEARITY file (the
override ``N/A``) only the classic correction is made.

The ramp is corrected a block of rows at a time (romanpipe.blocks) into one
output array: our products are stored uncompressed, so the input is
a read-only memory map and the step holds about two ramps in all. An
lz4-compressed input (romancal's default) is decompressed into a private
buffer, which is then corrected in place instead.

    python scripts/linearity.py r..._saturation.asdf r..._linearity.asdf [--override-linearity FILE]
        [--resultant-aware true --override-inverselinearity FILE --override-integralnonlinearity FILE]
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from romanpipe import cli, dqflags
from romanpipe.blocks import output_array, reusable_buffer, rows_per_block
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE, open_model
from romanpipe.steprun import StepRun, run_script
from romanpipe.steps import step_reftypes

import numba
import numpy as np
from roman_datamodels import datamodels

log = logging.getLogger("linearity")

STEP = "linearity"
INPUT_MODELS = (datamodels.RampModel,)
def evaluate_polynomial(coeffs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """sum_n coeffs[n] * values^n by Horner's scheme, in float64.

    coeffs (ncoeffs, ...) lowest order first, broadcasting against ``values``.
    """
    result = np.empty(np.broadcast_shapes(coeffs.shape[1:], values.shape))
    result[...] = coeffs[-1]
    for coefficient in coeffs[-2::-1]:
        result *= values
        result += coefficient
    return result


def uncorrectable_pixels(coeffs: np.ndarray, lin_dq: np.ndarray, *, flags=dqflags.pixel) -> np.ndarray:
    """True where the reference gives no correction: a NaN coefficient, a zero linear one, or NO_LIN_CORR."""
    return (np.isnan(coeffs).any(axis=0) | (coeffs[1] == 0)
            | ((lin_dq & np.uint32(flags["NO_LIN_CORR"])) != 0))


def check_ramp(data, groupdq, pixeldq, coeffs, lin_dq) -> None:
    """ValueError naming the first array that does not fit the ramp ``data``."""
    if data.ndim != 3:
        raise ValueError(f"data has shape {data.shape}, expected (nresultants, nrows, ncols)")
    if groupdq.shape != data.shape:
        raise ValueError(f"groupdq has shape {groupdq.shape}, the data {data.shape}")
    if pixeldq.shape != data.shape[1:]:
        raise ValueError(f"pixeldq has shape {pixeldq.shape}, the data {data.shape[1:]}")
    if coeffs.ndim != 3 or coeffs.shape[0] < 2 or coeffs.shape[1:] != data.shape[1:]:
        raise ValueError(f"LINEARITY coeffs have shape {coeffs.shape}, expected "
                         f"(ncoeffs >= 2, {data.shape[1]}, {data.shape[2]})")
    if lin_dq.shape != data.shape[1:]:
        raise ValueError(f"LINEARITY dq has shape {lin_dq.shape}, the data {data.shape[1:]}")


def correct_linearity(data, groupdq, pixeldq, coeffs, lin_dq, *, flags=dqflags.pixel, out=None):
    """Data (float32) and new PIXELDQ after the linearity correction.

    data (nres, nrows, ncols) DN (any array, e.g. memory-mapped); groupdq (nres, nrows, ncols);
    pixeldq, lin_dq (nrows, ncols); coeffs (ncoeffs, nrows, ncols), lowest order first.
    out: a float32 array of the data's shape to write the corrected data into, which
    may be ``data`` itself (each block is read before it is written); by default a
    new array. Inputs are not modified, except ``data`` when it is passed as ``out``.
    """
    check_ramp(data, groupdq, pixeldq, coeffs, lin_dq)
    saturated = np.uint8(flags["SATURATED"])
    uncorrectable = uncorrectable_pixels(coeffs, lin_dq, flags=flags)

    corrected = output_array(data, out)
    step = rows_per_block(data.shape)
    for start in range(0, data.shape[1], step):
        rows = slice(start, start + step)
        observed = np.asarray(data[:, rows], dtype=np.float64)
        linearized = evaluate_polynomial(np.asarray(coeffs[:, rows], dtype=np.float64), observed)
        keep = ((groupdq[:, rows] & saturated) != 0) | uncorrectable[rows]
        # NaN coefficients give NaN here; the observed value replaces them.
        np.copyto(linearized, observed, where=keep)
        corrected[:, rows] = linearized

    no_lin_corr = np.where(uncorrectable, np.uint32(flags["NO_LIN_CORR"]), np.uint32(0))
    new_pixeldq = pixeldq.astype(np.uint32) | lin_dq.astype(np.uint32) | no_lin_corr
    return corrected, new_pixeldq


# romancal 1.1 clips corrected values beyond this (DN; full well is ~65k) and flags them DO_NOT_USE.
IMPLAUSIBLE_DN = 1e6
INL_CHANNEL_COLUMNS = 128


class IntegralNonlinearity(NamedTuple):
    """The INTEGRALNONLINEARITY correction: per 128-column channel, a table of corrections (DN, added)
    on a grid of raw DN values, interpolated linearly and held at its ends (as np.interp)."""

    grid: np.ndarray  # (npoints,) float64, rising strictly
    tables: np.ndarray  # (nchannels, npoints) float64
    slopes: np.ndarray  # (nchannels, npoints - 1) float64, np.interp's slopes


def integral_nonlinearity(grid: np.ndarray, channel_corrections: list[np.ndarray]) -> IntegralNonlinearity:
    """The INL correction of a grid and one table per 128-column channel; ValueError unless the
    grid rises strictly and every table has a value at each of its points."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2 or not np.all(np.diff(grid) > 0):
        raise ValueError(f"INTEGRALNONLINEARITY value grid must rise strictly ({grid.size} points)")
    tables = np.array([np.asarray(table, dtype=np.float64) for table in channel_corrections])
    if tables.shape[1:] != grid.shape:
        raise ValueError(f"INTEGRALNONLINEARITY corrections have {tables.shape[1:]} values, "
                         f"the grid {grid.size}")
    # np.interp's slopes, computed as it does.
    return IntegralNonlinearity(grid, tables, np.diff(tables, axis=1) / np.diff(grid))


@numba.njit(inline="always")
def _horner(coeffs, x):
    """sum_n coeffs[n] x^n by Horner's scheme, one multiplication and one addition a step, as
    :func:`evaluate_polynomial` (so the two agree bit for bit)."""
    result = coeffs[coeffs.size - 1]
    for n in range(coeffs.size - 2, -1, -1):
        result = result * x
        result = result + coeffs[n]
    return result


@numba.njit(inline="always")
def _pixel_polynomial(coeffs, identity, row, column, out):
    """A pixel's coefficients as float64 in ``out``; the identity polynomial where ``identity``."""
    for n in range(out.size):
        out[n] = np.float64(coeffs[n, row, column])
    if identity[row, column]:
        out[:] = 0.0
        out[1] = 1.0


@numba.njit(inline="always")
def _interpolate(x, grid, table, slope, points_per_dn):
    """``np.interp(x, grid, table)`` bit for bit, ``slope`` its slopes: on a grid point or beyond
    the grid the table's value there; else slope * (x - grid[j]) + table[j], from the other end
    if that is NaN; NaN stays NaN. The interval grid[j] <= x < grid[j + 1] is guessed as if the
    grid were even (INL grids nearly are) and walked to, which finds np.interp's for any grid
    that rises strictly."""
    last = grid.size - 1
    if np.isnan(x):
        return x
    if x > grid[last]:
        return table[last]
    if x < grid[0]:
        return table[0]
    j = min(int((x - grid[0]) * points_per_dn), last)
    while grid[j] > x:
        j -= 1
    while j < last and grid[j + 1] <= x:
        j += 1
    if j == last or grid[j] == x:
        return table[j]
    value = slope[j] * (x - grid[j]) + table[j]
    if np.isnan(value):
        value = slope[j] * (x - grid[j + 1]) + table[j + 1]
        if np.isnan(value) and table[j] == table[j + 1]:
            value = table[j]
    return value


@numba.njit(cache=True, nogil=True)
def correct_pixels_by_reads(observed, saturated, coeffs, uncorrectable, inverse_coeffs, uninvertible, reads,
                            read_start, mean_read, grid, tables, slopes, channel_columns, out):
    """The read-level correction of a block of pixels into ``out`` (float32), pixel by pixel with
    numpy's arithmetic in numpy's order (float64; means as sequential sums over the reads
    divided by their number), so the result is the array-at-a-time version's bit for bit: one
    pass per pixel instead of some 25 passes per read over float64 temporaries of a block.

    observed, saturated, out (nres, nrows, ncols); coeffs, inverse_coeffs (ncoeffs, nrows, ncols)
    the LINEARITY and INVERSELINEARITY polynomials, each replaced by the identity where
    ``uncorrectable`` / ``uninvertible`` (nrows, ncols); reads the read numbers of all
    resultants in order, resultant k's from read_start[k] to read_start[k + 1]; mean_read
    (nres,); tables with no rows: no INL.
    """
    nres, nrows, ncols = observed.shape
    use_inl = tables.shape[0] > 0
    points_per_dn = (grid.size - 1) / (grid[grid.size - 1] - grid[0]) if use_inl else 0.0
    values = np.empty(nres)
    linear = np.empty(nres)
    raw = np.empty(reads.size)
    forward = np.empty(coeffs.shape[0])
    inverse = np.empty(inverse_coeffs.shape[0])
    for row in range(nrows):
        for column in range(ncols):
            _pixel_polynomial(coeffs, uncorrectable, row, column, forward)
            _pixel_polynomial(inverse_coeffs, uninvertible, row, column, inverse)
            unsaturated = 0
            for k in range(nres):
                values[k] = np.float64(observed[k, row, column])
                if saturated[k, row, column]:
                    linear[k] = values[k]
                else:
                    linear[k] = _horner(forward, values[k])
                    unsaturated += 1
            last = max(unsaturated - 2, 1)
            first_linear = linear[0]
            rate = (linear[last] - first_linear) / (mean_read[last] - mean_read[0])
            channel = column // channel_columns
            for k in range(nres):
                if saturated[k, row, column]:
                    out[k, row, column] = np.float32(values[k])
                    continue
                start, stop = read_start[k], read_start[k + 1]
                count = stop - start
                total = 0.0
                for i in range(start, stop):
                    raw[i] = _horner(inverse, first_linear + rate * (reads[i] - mean_read[0]))
                    total = raw[i] if i == start else total + raw[i]
                shift = values[k] - total / count
                for i in range(start, stop):
                    shifted = raw[i] + shift
                    if use_inl:
                        shifted = shifted + _interpolate(shifted, grid, tables[channel], slopes[channel],
                                                         points_per_dn)
                    corrected = _horner(forward, shifted)
                    total = corrected if i == start else total + corrected
                out[k, row, column] = np.float32(total / count)


def correct_linearity_by_reads(data, groupdq, pixeldq, coeffs, lin_dq, inverse_coeffs, read_pattern, *,
                               inl=None, flags=dqflags.pixel, group_flags=dqflags.group, out=None):
    """Data (float32), new PIXELDQ and new GROUPDQ after the resultant-aware correction.

    As :func:`correct_linearity`, plus inverse_coeffs (ncoeffs', nrows, ncols) the
    INVERSELINEARITY polynomials (linear DN -> raw DN), read_pattern the reads of each
    resultant, and inl the INTEGRALNONLINEARITY correction (:func:`integral_nonlinearity`) or
    None. Inputs are not modified, except ``data`` when it is passed as ``out``.
    """
    check_ramp(data, groupdq, pixeldq, coeffs, lin_dq)
    if inverse_coeffs.ndim != 3 or inverse_coeffs.shape[0] < 2 or inverse_coeffs.shape[1:] != data.shape[1:]:
        raise ValueError(f"INVERSELINEARITY coeffs have shape {inverse_coeffs.shape}, expected "
                         f"(ncoeffs >= 2, {data.shape[1]}, {data.shape[2]})")
    if len(read_pattern) != data.shape[0]:
        raise ValueError(f"read_pattern has {len(read_pattern)} resultants, the data {data.shape[0]}")
    if data.shape[0] < 2:
        raise ValueError(f"{data.shape[0]} resultant(s): the read-level correction needs two or more")
    saturated_flag = np.uint8(flags["SATURATED"])
    # Where a reference gives no correction its polynomial is the identity (inside the kernel:
    # float64 copies of both references would be 1.3 GB on a full detector).
    uncorrectable = uncorrectable_pixels(coeffs, lin_dq, flags=flags)
    uninvertible = uncorrectable_pixels(inverse_coeffs, lin_dq, flags=flags)
    reads = np.concatenate([np.asarray(reads, dtype=np.float64) for reads in read_pattern])
    read_start = np.cumsum([0, *(len(reads) for reads in read_pattern)])
    mean_read = np.array([np.mean(reads) for reads in read_pattern])
    grid, tables, slopes = inl if inl is not None else (np.zeros(2), np.zeros((0, 2)), np.zeros((0, 1)))
    if tables.shape[0] and -(-data.shape[2] // INL_CHANNEL_COLUMNS) > tables.shape[0]:
        raise ValueError(f"INTEGRALNONLINEARITY has {tables.shape[0]} channels, "
                         f"the data {data.shape[2]} columns")
    corrected = output_array(data, out)
    new_groupdq = np.array(groupdq, dtype=np.uint8, copy=True)
    step = rows_per_block(data.shape)
    for start in range(0, data.shape[1], step):
        rows = slice(start, start + step)
        # Straight into the output, also when it is ``data``: the kernel reads all of a pixel's
        # resultants before it writes any.
        block = corrected[:, rows]
        correct_pixels_by_reads(np.asarray(data[:, rows]), (groupdq[:, rows] & saturated_flag) != 0,
                                coeffs[:, rows], uncorrectable[rows], inverse_coeffs[:, rows],
                                uninvertible[rows], reads, read_start, mean_read,
                                grid, tables, slopes, INL_CHANNEL_COLUMNS, block)
        implausible = np.abs(block) > IMPLAUSIBLE_DN
        if implausible.any():
            np.clip(block, -IMPLAUSIBLE_DN, IMPLAUSIBLE_DN, out=block)
            new_groupdq[:, rows][implausible] |= np.uint8(group_flags["DO_NOT_USE"])
    no_lin_corr = np.where(uncorrectable | uninvertible, np.uint32(flags["NO_LIN_CORR"]), np.uint32(0))
    new_pixeldq = pixeldq.astype(np.uint32) | lin_dq.astype(np.uint32) | no_lin_corr
    return corrected, new_pixeldq, new_groupdq


def inl_from_reference(reference, ncols: int):
    """:func:`integral_nonlinearity` of an INTEGRALNONLINEARITY model for ``ncols`` columns;
    ValueError naming a channel it lacks."""
    channels = []
    for channel in range(1, -(-ncols // INL_CHANNEL_COLUMNS) + 1):
        entry = reference.inl_table.get(f"science_channel_{channel:02d}")
        if entry is None or entry.get("correction") is None:
            raise ValueError(f"INTEGRALNONLINEARITY has no correction for science channel {channel}")
        channels.append(np.asarray(entry["correction"], dtype=np.float64))
    return integral_nonlinearity(np.asarray(reference.value), channels)


def run(ramp, step: StepRun):
    """Correct ``ramp`` (a RampModel, updated and returned) with the LINEARITY reference's polynomials
    (``resultant_aware``: read by read, see the module docstring)."""
    linearity_path = step.reference("linearity")
    data = np.asarray(ramp.data)
    with open_model(linearity_path, (datamodels.LinearityRefModel,)) as reference:
        coeffs, lin_dq = np.asarray(reference.coeffs), np.asarray(reference.dq)
    try:
        if step.parameters["resultant_aware"]:
            ramp.data, ramp.pixeldq, ramp.groupdq = correct_by_reads(ramp, data, coeffs, lin_dq, step)
        else:
            ramp.data, ramp.pixeldq = correct_linearity(
                data, np.asarray(ramp.groupdq), np.asarray(ramp.pixeldq), coeffs, lin_dq,
                out=reusable_buffer(data))
    except ValueError as err:
        raise InputFileError(step.input, f"{err} (reference {linearity_path.name})") from None
    log.info("%d pixels without linearity correction (NO_LIN_CORR)",
             int(np.count_nonzero(ramp.pixeldq & dqflags.pixel.NO_LIN_CORR)))
    return ramp, COMPLETE


def correct_by_reads(ramp, data, coeffs, lin_dq, step: StepRun):
    """:func:`correct_linearity_by_reads` of an open ramp with the step's other two references."""
    inverse_path = step.reference("inverselinearity")
    with open_model(inverse_path, (datamodels.InverselinearityRefModel,)) as reference:
        inverse_coeffs = np.asarray(reference.coeffs)
    inl = None
    if "integralnonlinearity" not in step_reftypes(STEP, step.parameters):
        log.info("no INTEGRALNONLINEARITY reference (N/A): the classic correction only")
    else:
        inl_path = step.reference("integralnonlinearity")
        with open_model(inl_path, (datamodels.IntegralnonlinearityRefModel,)) as reference:
            try:
                inl = inl_from_reference(reference, data.shape[-1])
            except ValueError as err:
                raise InputFileError(inl_path, str(err)) from None
    result = correct_linearity_by_reads(
        data, np.asarray(ramp.groupdq), np.asarray(ramp.pixeldq), coeffs, lin_dq, inverse_coeffs,
        [list(reads) for reads in ramp.meta.exposure.read_pattern], inl=inl, out=reusable_buffer(data))
    flagged = int(np.count_nonzero(result[2] & dqflags.group.DO_NOT_USE))
    if flagged:
        log.warning("%d resultants beyond +-%g DN after the correction: clipped and flagged DO_NOT_USE",
                    flagged, IMPLAUSIBLE_DN)
    return result


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
