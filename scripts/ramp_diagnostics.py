"""ramp_diagnostics: the TVAC tutorial's figures of a partially calibrated ramp, as PNG files.

The TVAC tutorial, sections "Make plots" to "Final visualizations of saturation and slope
deviations", drawn from
the ``_linearity`` product (RampModel: dq_init, saturation, refpix and linearity
done) of one exposure and the SATURATION reference, for chosen frames k (default
2, N//2 and N-1) and a cutout (default the tutorial's centre x = y = 1900, half-size
256; a centre off the detector is moved onto it, the window clipped to it):

difference_frames_full.png
    frame k - frame 1 over the whole readout, one colour scale from the lowest 2nd
    to the highest 98th percentile of the panels.
difference_frames_cutout.png
    the same in the cutout, the percentiles over unflagged pixels and flagged
    pixels (PIXELDQ != 0) white.
saturation_frames.png
    one row per chosen frame: the frame (10^3 DN); its difference from the previous
    frame divided by the pixel's mean difference; the mask: saturated (3), its
    4-neighbours (2) and diagonal neighbours (1), i.e. the 8-neighbour dilation.
relative_slope_neighbours.png
    frame by frame, that ratio for the 8-neighbours of saturated pixels against
    clean pixels (never saturated nor a neighbour, PIXELDQ 0): median and 16-84 %.

Saturated, as in the tutorial, means at or above the SATURATION threshold in the raw
frame (``--raw`` gives the Level 1 exposure; NaN or NO_SAT_CHECK thresholds never
saturate).
Without ``--raw`` the SATURATED flags of GROUPDQ stand in for it: the saturation
step set them by that comparison with the same reference. The pixel's mean
difference leaves out frames in which it is saturated or a 4-neighbour of a
saturated pixel (the tutorial's); ``--min-mean-slope`` leaves pixels with less signal out
of the ratio (the tutorial keeps all). Only the cutout and the chosen frames are read
from the memory-mapped ramp.

    python scripts/ramp_diagnostics.py r..._linearity.asdf --saturation roman_wfi_saturation_0001.asdf
        --out-dir DIR [--raw r..._uncal.asdf] [--center X Y] [--half-size N] [--frames K ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display: before pyplot is imported

from romanpipe import cli, dqflags  # noqa: E402
from romanpipe.detector import matching_science_area  # noqa: E402
from romanpipe.errors import InputFileError, ParameterError  # noqa: E402
from romanpipe.files import atomic_path  # noqa: E402
from romanpipe.naming import split_suffix  # noqa: E402
from romanpipe.products import open_level1, open_model, plain_array  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from roman_datamodels import datamodels  # noqa: E402
from scipy.ndimage import binary_dilation  # noqa: E402

log = logging.getLogger("ramp_diagnostics")

TUTORIAL_CENTER = (1900, 1900)  # x, y
TUTORIAL_HALF_SIZE = 256
BASELINE_FRAME = 1
FIGURES = ("difference_frames_full.png", "difference_frames_cutout.png", "saturation_frames.png",
           "relative_slope_neighbours.png")
# Mask classes of the TVAC tutorial's "Saturated or Corrupted" panel.
SATURATED, NEIGHBOUR, DIAGONAL = 3, 2, 1
_FOUR_NEIGHBOURS = np.array([[[0, 1, 0], [1, 0, 1], [0, 1, 0]]], dtype=bool)
_DIAGONALS = np.array([[[1, 0, 1], [0, 0, 0], [1, 0, 1]]], dtype=bool)


def cutout_window(shape: tuple[int, int], center: tuple[int, int], half_size: int) -> tuple[slice, slice]:
    """Rows and columns of the square of ``half_size`` around ``center`` (x, y), clipped to ``shape``.

    A centre outside the detector is first moved to its nearest pixel.
    """
    if half_size < 1:
        raise ValueError(f"half-size is {half_size}, expected at least 1")
    nrows, ncols = shape
    x = min(max(center[0], 0), ncols - 1)
    y = min(max(center[1], 0), nrows - 1)
    if (x, y) != tuple(center):
        log.warning("cutout centre (%d, %d) is off the %dx%d detector: using (%d, %d)",
                    *center, ncols, nrows, x, y)
    return (slice(max(0, y - half_size), min(nrows, y + half_size)),
            slice(max(0, x - half_size), min(ncols, x + half_size)))


def default_frames(nframes: int) -> list[int]:
    """The TVAC tutorial's frames: the first usable one (2), the middle one and the last one."""
    return sorted({2, max(2, nframes // 2), nframes - 1})


def saturated_from_thresholds(raw_frames: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: frame at or above the pixel's threshold (DN); NaN thresholds never saturate."""
    usable = np.where(np.isfinite(thresholds), thresholds, np.inf)
    return np.asarray(raw_frames) >= usable


def saturated_from_groupdq(groupdq: np.ndarray, *, flags=dqflags.pixel) -> np.ndarray:
    """(N, H, W) bool: resultants flagged SATURATED by the saturation step."""
    return (np.asarray(groupdq) & flags["SATURATED"]) != 0


def neighbour_masks(saturated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-neighbours and diagonal-only neighbours of saturated pixels, frame by frame (seed).

    Neither includes saturated pixels; together they are the 8-neighbour dilation
    minus the saturated pixels. Pixels beyond the edge count as unsaturated.
    """
    four = binary_dilation(saturated, structure=_FOUR_NEIGHBOURS) & ~saturated
    diagonal = binary_dilation(saturated, structure=_DIAGONALS) & ~saturated & ~four
    return four, diagonal


def mask_classes(saturated: np.ndarray, four: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
    """The TVAC tutorial's mask image: 3 saturated, 2 4-neighbour, 1 diagonal neighbour, 0 clean (uint8)."""
    return (SATURATED * saturated + NEIGHBOUR * four + DIAGONAL * diagonal).astype(np.uint8)


def mean_frame_difference(frames: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Per-pixel mean of frame k - frame k-1 over the frames k not ``excluded`` (float32; NaN if none).

    frames (N, H, W) DN; excluded (N, H, W) bool, e.g. saturated or next to a saturated pixel.
    """
    differences = np.diff(np.asarray(frames, dtype=np.float64), axis=0)
    weights = ~excluded[1:]
    total = np.sum(differences, axis=0, where=weights)
    count = np.count_nonzero(weights, axis=0)
    mean = np.full(total.shape, np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    return mean.astype(np.float32)


def relative_slopes(frames: np.ndarray, mean_difference: np.ndarray) -> np.ndarray:
    """(N-1, H, W): (frame k - frame k-1) / the pixel's mean difference, NaN where that is 0 or NaN."""
    differences = np.diff(np.asarray(frames, dtype=np.float64), axis=0)
    usable = np.isfinite(mean_difference) & (mean_difference != 0)
    ratio = np.full(differences.shape, np.nan)
    np.divide(differences, mean_difference, out=ratio, where=usable)
    return ratio.astype(np.float32)


def neighbour_and_clean_curves(ratio: np.ndarray, saturated: np.ndarray, good: np.ndarray) -> dict:
    """Frame-by-frame 16th, 50th, 84th percentiles of ``ratio`` for two pixel sets.

    ratio (N-1, H, W) from :func:`relative_slopes` (entry k-1 belongs to frame k);
    saturated (N, H, W); good (H, W) unflagged pixels. "neighbours" at frame k: the
    unsaturated 8-neighbours of pixels saturated at frame k; "clean": good pixels
    saturated and neighbouring in no frame. Returns the frames and a (N-1, 3) array
    per set, NaN where a set is empty.
    """
    eight = binary_dilation(saturated, structure=np.ones((1, 3, 3), dtype=bool)) & ~saturated
    clean = good & ~np.any(saturated | eight, axis=0)
    curves = {"frames": np.arange(1, saturated.shape[0])}
    for name, members in (("neighbours", eight[1:]), ("clean", np.broadcast_to(clean, eight[1:].shape))):
        percentiles = np.full((ratio.shape[0], 3), np.nan)
        for index in range(ratio.shape[0]):
            values = ratio[index][members[index]]
            values = values[np.isfinite(values)]
            if values.size:
                percentiles[index] = np.percentile(values, [16, 50, 84])
        curves[name] = percentiles
    return curves


def shared_limits(planes, good=None) -> tuple[float, float]:
    """Lowest 2nd and highest 98th percentile of the planes, over the ``good`` pixels if given (seed)."""
    lows, highs = [], []
    for plane in planes:
        values = plane[good] if good is not None and good.any() else plane
        low, high = np.percentile(values, [2, 98])
        lows.append(low)
        highs.append(high)
    return float(min(lows)), float(max(highs))


# ---- figures ----------------------------------------------------------------------------------

def difference_figure(differences: dict, label: str, origin: tuple[int, int], bad=None):
    """Panels of frame k - frame 1 with one colour scale; ``bad`` pixels white."""
    good = None if bad is None else ~bad
    vmin, vmax = shared_limits(list(differences.values()), good)
    cmap = plt.cm.viridis.with_extremes(bad="white")
    fig, axes = plt.subplots(1, len(differences), figsize=(5 * len(differences), 4), constrained_layout=True,
                             squeeze=False)
    image = None
    for ax, (frame, plane) in zip(axes[0], differences.items(), strict=True):
        shown = plane if bad is None else np.ma.array(plane, mask=bad)
        height, width = plane.shape
        extent = (origin[1] - 0.5, origin[1] + width - 0.5, origin[0] - 0.5, origin[0] + height - 0.5)
        image = ax.imshow(shown, vmin=vmin, vmax=vmax, cmap=cmap, origin="lower", extent=extent,
                          interpolation="nearest")
        ax.set_title(f"frames {frame}-{BASELINE_FRAME}", fontweight="bold")
        ax.set_xlabel("x [pix]")
        ax.set_ylabel("y [pix]")
    colorbar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    colorbar.set_label("DN (2-98 % of the panels)", fontweight="bold")
    fig.suptitle(label, fontweight="bold")
    return fig


def saturation_figure(frames: np.ndarray, ratio: np.ndarray, classes: np.ndarray, chosen, origin,
                      label: str):
    """One row per chosen frame: the frame (10^3 DN), difference / mean difference, the mask classes."""
    height, width = frames.shape[1:]
    extent = (origin[1] - 0.5, origin[1] + width - 0.5, origin[0] - 0.5, origin[0] + height - 0.5)
    signal_max = max(float(np.nanpercentile(frames[chosen[-1]], 99.5)) / 1e3, 1e-3)
    fig, axes = plt.subplots(len(chosen), 3, figsize=(13, 3.6 * len(chosen)), squeeze=False,
                             constrained_layout=True)
    for row, frame in zip(axes, chosen, strict=True):
        panels = (
            (frames[frame] / 1e3, {"cmap": "inferno_r", "vmin": 0, "vmax": signal_max},
             "Signal [$10^3$ DN]", f"Image, frame {frame}"),
            (ratio[frame - 1], {"cmap": "RdYlBu", "vmin": 0.75, "vmax": 1.25},
             "Frame slope / mean slope", f"Difference / mean slope, frame {frame}"),
            (classes[frame], {"cmap": plt.get_cmap("magma_r", SATURATED + 1), "vmin": -0.5,
                              "vmax": SATURATED + 0.5},
             "3 sat., 2 4-nbr, 1 diag.", f"Saturated and neighbours, frame {frame}"),
        )
        for ax, (plane, style, unit, title) in zip(row, panels, strict=True):
            image = ax.imshow(plane, origin="lower", extent=extent, interpolation="nearest", **style)
            colorbar = fig.colorbar(image, ax=ax, label=unit)
            if plane.dtype == np.uint8:  # the mask classes
                colorbar.set_ticks(range(SATURATED + 1))
            ax.set_title(title)
            ax.set_xlabel("x [pix]")
            ax.set_ylabel("y [pix]")
    fig.suptitle(label, fontweight="bold")
    return fig


def neighbour_figure(curves: dict, label: str):
    """Median and 16-84 % band of the relative slope per frame: neighbours of saturated vs clean pixels."""
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    for name, colour, legend in (("clean", "tab:blue", "clean pixels"),
                                 ("neighbours", "tab:red", "8-neighbours of saturated pixels")):
        low, median, high = curves[name].T
        ax.plot(curves["frames"], median, color=colour, label=f"{legend} (median)")
        ax.fill_between(curves["frames"], low, high, color=colour, alpha=0.25, label=f"{legend} (16-84 %)")
    ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle="--")
    ax.set_xlabel("frame k")
    ax.set_ylabel("(frame k - frame k-1) / mean slope")
    ax.set_title(f"{label}\nframe slope / mean slope: saturated pixels' neighbours vs clean pixels",
                 fontweight="bold", fontsize="medium")
    ax.legend(loc="best", fontsize="small")
    return fig


def save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG under ``path`` atomically and release it."""
    with atomic_path(path) as staging:
        fig.savefig(staging, format="png", dpi=100)
    plt.close(fig)
    log.info("wrote %s", path)
    return path


def make_figures(data, pixeldq, saturated_cutout, *, frames, window, label: str,
                 unchecked_count: int = 0, min_mean_slope: float | None = None) -> dict:
    """The four figures (name -> Figure) of a ramp. Inputs are not modified.

    data (N, H, W) DN, e.g. a memory map (only the chosen frames and the cutout are read);
    pixeldq (H, W); saturated_cutout (N, h, w) bool over ``window`` (rows, cols slices);
    frames: the chosen frames (2 <= k <= N-1); unchecked_count: cutout pixels without a
    usable threshold, named in the mask panel's title; min_mean_slope (DN per frame):
    pixels with a smaller mean difference get no ratio (in a dark background the
    ratio of two noise values says nothing); None keeps every pixel, as the tutorial.
    """
    rows, cols = window
    origin = (rows.start, cols.start)
    baseline = np.asarray(data[BASELINE_FRAME], dtype=np.float32)
    differences = {frame: np.asarray(data[frame], dtype=np.float32) - baseline for frame in frames}
    full = difference_figure(differences, label, (0, 0))
    bad = np.asarray(pixeldq[rows, cols]) != 0
    cutout_label = f"{label} x {cols.start}-{cols.stop - 1}, y {rows.start}-{rows.stop - 1}"
    cutout = difference_figure({frame: plane[rows, cols] for frame, plane in differences.items()},
                               f"{cutout_label}; flagged pixels (PIXELDQ) white", origin, bad=bad)
    del differences

    cube = np.asarray(data[:, rows, cols], dtype=np.float32)
    four, diagonal = neighbour_masks(saturated_cutout)
    mean_difference = mean_frame_difference(cube, saturated_cutout | four)
    if min_mean_slope is not None:
        mean_difference[~(mean_difference >= min_mean_slope)] = np.nan
    ratio = relative_slopes(cube, mean_difference)
    classes = mask_classes(saturated_cutout, four, diagonal)
    if unchecked_count:
        cutout_label += f" ({unchecked_count} px without a saturation threshold)"
    panels = saturation_figure(cube, ratio, classes, frames, origin, cutout_label)
    curves = neighbour_and_clean_curves(ratio, saturated_cutout, ~bad)
    slopes = neighbour_figure(curves, cutout_label)
    return dict(zip(FIGURES, (full, cutout, panels, slopes), strict=True))


def check_frames(frames, nframes: int) -> list[int]:
    """The chosen frames, sorted; ParameterError for one outside 2..N-1 (frame 1 is the baseline)."""
    chosen = sorted(set(frames)) if frames else default_frames(nframes)
    outside = [frame for frame in chosen if not 2 <= frame <= nframes - 1]
    if nframes < 3 or outside:
        raise ParameterError(f"frames {outside or chosen} are not in 2..{nframes - 1} "
                             f"(the ramp has {nframes} frames, frame 1 is the baseline)")
    return chosen


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ramp_diagnostics.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("ramp", type=Path, help="the _linearity product (RampModel) of one exposure")
    parser.add_argument("--saturation", type=Path, required=True, help="the SATURATION reference file")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder of the PNG files")
    parser.add_argument("--raw", type=Path, help="the exposure's Level 1 file: saturation from its raw "
                                                 "frames, as the TVAC tutorial (default: GROUPDQ SATURATED)")
    parser.add_argument("--center", type=int, nargs=2, default=TUTORIAL_CENTER, metavar=("X", "Y"),
                        help="cutout centre, 0-based readout pixel (default: %(default)s)")
    parser.add_argument("--half-size", type=int, default=TUTORIAL_HALF_SIZE, help="cutout half-size (pixels)")
    parser.add_argument("--frames", type=int, nargs="+", help="frames k to show (default: 2, N//2, N-1)")
    parser.add_argument("--min-mean-slope", type=float, help="DN per frame: no slope ratio for pixels with "
                                                             "a smaller mean difference (default: all, as "
                                                             "the TVAC tutorial)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    with open_model(args.ramp, (datamodels.RampModel,)) as ramp:
        data = plain_array(ramp.data)
        if data.ndim != 3:
            raise InputFileError(args.ramp, f"data has shape {data.shape}, expected (nframes, nrows, ncols)")
        frames = check_frames(args.frames, data.shape[0])
        try:
            window = cutout_window(data.shape[1:], tuple(args.center), args.half_size)
        except ValueError as err:
            raise ParameterError(str(err)) from None
        thresholds = cutout_thresholds(args.saturation, data.shape[1:], window)
        rows, cols = window
        if args.raw:
            with open_level1(args.raw) as raw:
                raw_data = plain_array(raw.data)
                if raw_data.shape != data.shape:
                    raise InputFileError(args.raw, f"data has shape {raw_data.shape}, the ramp {data.shape}")
                saturated = saturated_from_thresholds(np.asarray(raw_data[:, rows, cols], dtype=np.float32),
                                                      thresholds)
        else:
            saturated = saturated_from_groupdq(ramp.groupdq[:, rows, cols])
        log.info("%d pixels of the cutout saturated by frame %d", np.count_nonzero(saturated[-1]),
                 data.shape[0] - 1)
        label = f"{ramp.meta.instrument.detector} {split_suffix(args.ramp)[0]}"
        figures = make_figures(data, np.asarray(ramp.pixeldq), saturated, frames=frames, window=window,
                               label=label, unchecked_count=int(np.count_nonzero(np.isnan(thresholds))),
                               min_mean_slope=args.min_mean_slope)
    for name, figure in figures.items():
        save(figure, args.out_dir / name)


def cutout_thresholds(path: Path, shape: tuple[int, int], window) -> np.ndarray:
    """SATURATION thresholds (DN, float32) over the cutout; NaN where unknown or NO_SAT_CHECK."""
    with open_model(path, (datamodels.SaturationRefModel,)) as reference:
        try:
            thresholds = matching_science_area(np.asarray(reference.data, dtype=np.float32), shape)
            reference_dq = matching_science_area(np.asarray(reference.dq), shape)
        except ValueError as err:
            raise InputFileError(path, str(err)) from None
        unchecked = (reference_dq[window] & dqflags.pixel.NO_SAT_CHECK) != 0
        return np.where(unchecked, np.nan, thresholds[window]).astype(np.float32)

if __name__ == "__main__":
    cli.run_and_exit(main)
