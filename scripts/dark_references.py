"""dark_references: a superbias (BIAS) and a dark rate (DARK) reference file from raw dark exposures.

The TVAC tutorial, section "Optional: Super Bias from darks": the raw Level 1 data of
each dark (not a calibrated product: the tutorial fits the uncal cubes) get a
least-squares line y = a + b t per pixel over the frames after the first (the
tutorial leaves the reset-affected frame 0 out); the intercepts of the darks are
median-combined into the superbias. The time t is counted in frame times: the
tutorial uses the frame index; we take the read number of each (single-read)
resultant from ``meta.exposure.read_pattern`` when the file has one (read j
happens j frame times after the reset, as in romanpipe.readpattern), so the
superbias is the level at the reset, the one dark subtraction assumes; the two
differ by one frame's dark signal. The slopes (DN per frame, divided by
``meta.exposure.frame_time``) are median-combined the same way into the dark
rate (DN/s). Sums are float64, the
planes float32, and a ramp is read a block of rows at a time from its
memory-mapped file, one dark after another: memory holds one block plus two
planes per dark. The uncertainties are sqrt(pi/2) s / sqrt(N), the large-sample
standard error of a median of N values whose scatter across the darks is s (NaN
for one dark); pixels without a finite value are DO_NOT_USE.

The files carry the standard reference metadata and name their input darks in
the description; the DARK file matches science exposures (WFI_IMAGE and
WFI_SPECTRAL), like the simulator's. ``scripts/crds_deliver.py`` adds the DARK
file to an offline CRDS cache (crds 14.0.3 has no rmap for the BIAS reftype).

    python scripts/dark_references.py DARK1 DARK2 DARK3 --superbias roman_wfi_bias_0001.asdf
        --dark roman_wfi_dark_0001.asdf [--author NAME --useafter 2024-05-06T00:00:00]
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from romanpipe import cli, dqflags
from romanpipe.blocks import rows_per_block
from romanpipe.errors import InputFileError, ParameterError
from romanpipe.products import open_level1, plain_array, write_atomic

import numpy as np
from astropy.time import Time, TimeDelta
from roman_datamodels import datamodels

log = logging.getLogger("dark_references")

PEDIGREES = ("GROUND", "MODEL", "DUMMY", "SIMULATION")  # rad ref_common's enum
ORIGIN = "Roman WFI workflow (scripts/dark_references.py)"
# CRDS selects DARK by detector and exposure type: science exposures of both modes use it.
DARK_SELECTION_META = {
    "exposure": {"type": "WFI_IMAGE", "p_exptype": "WFI_IMAGE|WFI_SPECTRAL|"},
}
DARK_OPTICAL_ELEMENT = "DARK"
# Large-sample standard error of a median: sqrt(pi / 2) times that of a mean.
MEDIAN_ERROR_FACTOR = math.sqrt(math.pi / 2)


def fit_lines(cube, times=None, *, drop_first: bool = True, chunk_rows: int | None = None):
    """Per-pixel least-squares intercept (DN at time 0) and slope (DN per frame time), both float32.

    cube (nframes, nrows, ncols), any array that slices (a memory map is read a block
    of ``chunk_rows`` rows at a time; by default the rows of a 32 MB float64 block).
    times (nframes,): of each frame, in frame times; default the frame index (the TVAC tutorial's).
    ``drop_first`` leaves frame 0 out of the fit, as the TVAC tutorial does for the
    reset-affected first read. The input is not modified.
    """
    nframes, nrows, ncols = cube.shape
    first = 1 if drop_first else 0
    times = np.arange(nframes, dtype=np.float64) if times is None else np.asarray(times, dtype=np.float64)
    if times.shape != (nframes,):
        raise ValueError(f"{times.size} frame times for {nframes} frames")
    times = times[first:]
    if times.size < 2:
        raise ValueError(f"{nframes} frames: at least 2 are needed to fit a line"
                         + (" after dropping the first" if drop_first else ""))
    # Centred times: the same least-squares solution as the tutorial's normal equations,
    # without their cancellation between large sums.
    centred = times - times.mean()
    slope_weights = centred / np.dot(centred, centred)
    step = chunk_rows or rows_per_block((times.size, nrows, ncols))
    if step < 1:
        raise ValueError(f"chunk_rows is {chunk_rows}, expected a positive number of rows")
    intercept = np.empty((nrows, ncols), dtype=np.float32)
    slope = np.empty((nrows, ncols), dtype=np.float32)
    for start in range(0, nrows, step):
        rows = slice(start, min(nrows, start + step))
        block = np.asarray(cube[first:, rows], dtype=np.float64)
        block_slope = np.tensordot(slope_weights, block, axes=(0, 0))
        slope[rows] = block_slope
        intercept[rows] = block.mean(axis=0) - block_slope * times.mean()
    return intercept, slope


def median_combine(planes: Sequence[np.ndarray]):
    """Median (float32) of equally shaped planes, and its standard error from their scatter.

    The error is sqrt(pi/2) * std(ddof=1) / sqrt(N), N the finite values of the pixel;
    NaN where fewer than two are finite. NaN values are left out of both.
    """
    if not planes:
        raise ValueError("no planes to combine")
    stack = np.stack(planes, axis=0)
    count = np.sum(np.isfinite(stack), axis=0)
    median = np.full(stack.shape[1:], np.nan)
    error = np.full(stack.shape[1:], np.nan)
    # Pixels with too few finite values stay NaN (DO_NOT_USE) instead of making numpy warn.
    some, several = count >= 1, count >= 2
    median[some] = np.nanmedian(stack[:, some], axis=0)
    error[several] = (MEDIAN_ERROR_FACTOR * np.nanstd(stack[:, several], axis=0, ddof=1)
                      / np.sqrt(count[several]))
    return median.astype(np.float32), error.astype(np.float32)


def fit_dark_exposure(path, *, drop_first: bool = True, chunk_rows: int | None = None) -> dict:
    """Fit one raw dark file: its intercept (DN) and dark rate (DN/s) planes, detector, start time.

    The file is memory-mapped and closed before returning.
    """
    model = open_level1(path)
    try:
        exposure = model.meta.exposure
        frame_time = float(exposure.frame_time)
        if not (math.isfinite(frame_time) and frame_time > 0):
            raise InputFileError(path, f"meta.exposure.frame_time is {frame_time}, expected a positive time")
        read_pattern = [list(reads) for reads in exposure.get("read_pattern", [])]
        if any(len(reads) != 1 for reads in read_pattern):
            raise InputFileError(path, "resultants average several reads: the fit needs one read "
                                       "per resultant, as ground-test darks have")
        times = [reads[0] for reads in read_pattern] or None
        try:
            intercept, slope = fit_lines(plain_array(model.data), times, drop_first=drop_first,
                                         chunk_rows=chunk_rows)
        except ValueError as err:
            raise InputFileError(path, str(err)) from None
        fit = {"path": Path(path), "detector": str(model.meta.instrument.detector),
               "start_time": Time(exposure.start_time), "intercept": intercept,
               "rate": slope / np.float32(frame_time), "nframes": model.data.shape[0]}
    finally:
        model.close()
    log.info("%s: median intercept %.1f DN, median dark rate %.4g DN/s", path,
             np.nanmedian(fit["intercept"]), np.nanmedian(fit["rate"]))
    return fit


def reference_model(model_type, reftype: str, *, detector: str, description: str, author: str,
                    useafter: Time, pedigree: str, arrays: dict, extra_meta: dict | None = None):
    """A reference model with the standard reference metadata and ``arrays`` as its data."""
    shape = next(iter(arrays.values())).shape
    model = model_type.create_fake_data(shape=shape)
    extra_meta = extra_meta or {}
    model.meta.update({
        "reftype": reftype,
        "author": author,
        "description": description,
        "pedigree": pedigree,
        "useafter": useafter,
        "telescope": "ROMAN",
        "origin": ORIGIN,
        "instrument": {"name": "WFI", "detector": detector, **extra_meta.get("instrument", {})},
        **{key: value for key, value in extra_meta.items() if key != "instrument"},
    })
    for name, array in arrays.items():
        setattr(model, name, array)
    return model


def unusable(values: np.ndarray) -> np.ndarray:
    """DQ plane: DO_NOT_USE where ``values`` is not finite."""
    return np.where(np.isfinite(values), 0, dqflags.pixel.DO_NOT_USE).astype(np.uint32)


def dark_references(fits: Sequence[dict], *, author: str, useafter: Time, pedigree: str = "GROUND"):
    """The superbias (SuperbiasRefModel) and dark (DarkRefModel) of the fitted darks."""
    detectors = sorted({fit["detector"] for fit in fits})
    if len(detectors) != 1:
        raise ParameterError(f"the darks come from several detectors ({', '.join(detectors)}): "
                             "a reference describes one")
    shapes = {fit["intercept"].shape for fit in fits}
    if len(shapes) != 1:
        raise ParameterError(f"the darks have different shapes {sorted(shapes)}")
    names = ", ".join(fit["path"].name for fit in fits)
    frames = ", ".join(sorted({f"1-{fit['nframes'] - 1}" for fit in fits}))
    common = {"detector": detectors[0], "author": author, "useafter": useafter, "pedigree": pedigree}

    superbias, superbias_error = median_combine([fit["intercept"] for fit in fits])
    superbias_model = reference_model(
        datamodels.SuperbiasRefModel, "BIAS", **common,
        description=(f"Superbias (DN): median over {len(fits)} raw darks of per-pixel least-squares "
                     f"intercepts at time 0 (frames {frames} fitted): {names}"),
        arrays={"data": superbias, "err": superbias_error, "dq": unusable(superbias)})
    del superbias, superbias_error

    rate, rate_error = median_combine([fit["rate"] for fit in fits])
    dark_model = reference_model(
        datamodels.DarkRefModel, "DARK", **common,
        description=(f"Dark rate (DN/s): median over {len(fits)} raw darks of per-pixel least-squares "
                     f"slopes (frames {frames} fitted) / frame time: {names}"),
        arrays={"dark_slope": rate, "dark_slope_error": rate_error, "dq": unusable(rate)},
        extra_meta={**DARK_SELECTION_META, "instrument": {"optical_element": DARK_OPTICAL_ELEMENT}})
    return superbias_model, dark_model


def default_useafter(fits: Sequence[dict]) -> Time:
    """00:00 UTC of the day before the first dark, as the simulator dates its references.

    Exposures of the test taken before the darks (the TVAC tutorial's illuminated one) then select them too.
    """
    first = min(fit["start_time"] for fit in fits)
    return Time((first - TimeDelta(1, format="jd")).strftime("%Y-%m-%dT00:00:00"), format="isot", scale="utc")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dark_references.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("darks", nargs="+", type=Path, help="raw Level 1 dark exposures (TvacModel or "
                                                            "ScienceRawModel) of one detector")
    parser.add_argument("--superbias", type=Path, required=True, help="output BIAS reference file")
    parser.add_argument("--dark", type=Path, required=True, help="output DARK reference file")
    parser.add_argument("--author", default="dark_references.py", help="meta.author of both files")
    parser.add_argument("--useafter", help="meta.useafter (ISO time); default: 00:00 UTC of the day "
                                           "before the first dark")
    parser.add_argument("--pedigree", default="GROUND", choices=PEDIGREES, help="meta.pedigree")
    parser.add_argument("--chunk-rows", type=int, help="rows fitted at a time (default: a 32 MB block)")
    parser.add_argument("--keep-first-frame", action="store_true",
                        help="fit frame 0 too (the TVAC tutorial leaves the reset-affected first read out)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.superbias.resolve() == args.dark.resolve():
        raise ParameterError(f"--superbias and --dark are the same file {args.superbias}")
    if args.chunk_rows is not None and args.chunk_rows < 1:
        raise ParameterError(f"--chunk-rows is {args.chunk_rows}, expected a positive number")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    fits = [fit_dark_exposure(path, drop_first=not args.keep_first_frame, chunk_rows=args.chunk_rows)
            for path in args.darks]
    if args.useafter:
        try:
            useafter = Time(args.useafter, format="isot", scale="utc")
        except ValueError:
            raise ParameterError(f"--useafter {args.useafter!r} is not an ISO time "
                                 "(e.g. 2024-05-06T00:00:00)") from None
    else:
        useafter = default_useafter(fits)
    superbias, dark = dark_references(fits, author=args.author, useafter=useafter, pedigree=args.pedigree)
    write_atomic(superbias, args.superbias)
    write_atomic(dark, args.dark)


if __name__ == "__main__":
    cli.run_and_exit(main)
