"""quicklook: a PNG of a calibrated image or mosaic for the report, flagged pixels marked.

The data are shown with an asinh stretch between the 0.5th and 99.8th percentiles of the
usable pixels (bright stars stay visible against the noise of the sky); pixels that carry
DO_NOT_USE in a `_cal` image, or that no input covered in a mosaic (weight 0), are
painted red. The title names the product, its optical element and the share of flagged
pixels. With ``--catalog`` (the product's `_cat.parquet`) each source is circled at its
position (the PSF fit's, else the centroid), the title gives the number of sources, and a
histogram below shows their Kron AB magnitudes (one per filter in a multiband catalog,
whose quicklook is of its `_segm.asdf`: the detection image).

    python scripts/quicklook.py results/exposures/<expo>_cal.asdf results/quicklook/<expo>_cal.png \
        [--catalog results/exposures/<expo>_cat.parquet]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a batch node
from romanpipe import cli, dqflags  # noqa: E402
from romanpipe.errors import InputFileError  # noqa: E402
from romanpipe.files import atomic_path  # noqa: E402
from romanpipe.products import open_model  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.visualization import AsinhStretch, AsymmetricPercentileInterval, ImageNormalize  # noqa: E402
from roman_datamodels import datamodels  # noqa: E402

FLAGGED_COLOUR = (0.9, 0.1, 0.1, 1.0)
SOURCE_COLOUR = "tab:cyan"
# Samples drawn per axis at most: the PNG's image is about 500 pixels wide, and matplotlib's
# nearest-neighbour drawing of a full 4088^2 array (normalising and resampling all of it)
# was most of the job's work.
MAX_SHOWN_SAMPLES = 1024
PRODUCT_MODELS = (datamodels.ImageModel, datamodels.MosaicModel, datamodels.MultibandSegmentationMapModel)


@dataclass(frozen=True)
class CatalogView:
    """What the figure shows of a catalog: positions (0-based pixels) and AB magnitudes by column."""

    x: np.ndarray
    y: np.ndarray
    magnitudes: dict[str, np.ndarray]


def read_catalog(path: Path) -> CatalogView:
    """A `_cat.parquet` (any level): the PSF positions where fitted, else the centroids, and its
    Kron magnitudes (``kron_abmag``, or ``kron_<filter>_abmag`` per filter)."""
    import pandas as pd

    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise InputFileError(path, f"not a readable Parquet catalog ({err})") from None
    x, y = ("x_psf", "y_psf") if "x_psf" in table.columns else ("x_centroid", "y_centroid")
    if x not in table.columns:
        raise InputFileError(path, f"no {x} column: not a source catalog")
    magnitudes = {name: table[name].to_numpy(dtype=float) for name in table.columns
                  if name.startswith("kron_") and name.endswith("_abmag")}
    return CatalogView(table[x].to_numpy(dtype=float), table[y].to_numpy(dtype=float), magnitudes)


def shown_data(model) -> np.ndarray:
    """The image a product shows: its data, or a segmentation map's detection image."""
    if isinstance(model, datamodels.MultibandSegmentationMapModel):
        return np.asarray(model["detection_image"], dtype=np.float32)
    return np.asarray(model.data, dtype=np.float32)


def unusable_pixels(model) -> np.ndarray:
    """Pixels not to trust: DO_NOT_USE in an image, no coverage in a mosaic, any non-finite value."""
    data = shown_data(model)
    if isinstance(model, datamodels.MosaicModel):
        flagged = np.asarray(model.weight) <= 0
    elif isinstance(model, datamodels.ImageModel):
        flagged = (np.asarray(model.dq) & dqflags.pixel.DO_NOT_USE) != 0
    else:  # a detection image is exactly 0 where no filter had a usable pixel (romanpipe.catalogs.detect)
        flagged = data == 0
    return flagged | ~np.isfinite(data)


def quicklook_figure(data: np.ndarray, flagged: np.ndarray, title: str, unit: str,
                     catalog: CatalogView | None = None):
    """The figure: asinh-stretched data, flagged pixels in red, a colour bar in the data's unit;
    with ``catalog`` its sources circled and a histogram of their magnitudes below."""
    usable = data[~flagged]
    if usable.size == 0:
        raise ValueError("no usable pixel to show")
    norm = ImageNormalize(usable, interval=AsymmetricPercentileInterval(0.5, 99.8),
                          stretch=AsinhStretch(0.02))
    cmap = plt.get_cmap("gray").with_extremes(bad=FLAGGED_COLOUR)
    height, width = data.shape
    step = -(-max(height, width) // MAX_SHOWN_SAMPLES)
    sampled = np.s_[step // 2::step, step // 2::step]  # each sample the middle of its step
    shown = np.ma.masked_array(data[sampled], mask=flagged[sampled])
    image_height = 6.4 * height / width + 0.6
    if catalog is None:
        fig, ax = plt.subplots(figsize=(6.4, image_height), layout="constrained")
    else:
        fig, (ax, histogram) = plt.subplots(2, 1, figsize=(6.4, image_height + 2.2), layout="constrained",
                                            height_ratios=(image_height, 2.2))
    # Drawn over the pixels it samples: axes, circles and flags stay in the data's pixel frame.
    image = ax.imshow(shown, origin="lower", cmap=cmap, norm=norm, interpolation="nearest",
                      extent=(-0.5, shown.shape[1] * step - 0.5, -0.5, shown.shape[0] * step - 0.5))
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(-0.5, height - 0.5)
    fig.colorbar(image, ax=ax, shrink=0.8, label=unit)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    if catalog is not None:
        ax.scatter(catalog.x, catalog.y, s=80, facecolors="none", edgecolors=SOURCE_COLOUR, linewidths=1.2)
        magnitude_histogram(histogram, catalog.magnitudes)
    return fig


def magnitude_histogram(ax, magnitudes: dict[str, np.ndarray]) -> None:
    """Step histograms of each magnitude column (finite values), in half-magnitude bins."""
    finite = {name: values[np.isfinite(values)] for name, values in magnitudes.items()}
    values = np.concatenate(list(finite.values())) if finite else np.array([])
    if values.size:
        bins = np.arange(np.floor(values.min()), np.ceil(values.max()) + 0.5, 0.5)
        for name, column in finite.items():
            ax.hist(column, bins=bins, histtype="step", label=name)
        ax.legend(fontsize=8)
    ax.set_xlabel("Kron AB magnitude")
    ax.set_ylabel("sources")


def describe(model, path: Path, flagged: np.ndarray) -> tuple[str, str]:
    """The figure's title and the data's unit."""
    element = model.meta.instrument.get("optical_element", "?")
    if isinstance(model, datamodels.MultibandSegmentationMapModel):
        element = "detection image of " + ", ".join(
            str(meta["instrument"]["optical_element"]) for meta in model.meta.get("image_metas", []))
    share = 100.0 * flagged.mean()
    title = f"{path.name}\n{element}, asinh stretch; red: flagged or uncovered ({share:.2f} % of pixels)"
    unit = str(getattr(model.data, "unit", "")) or ("MJy/sr" if isinstance(model, datamodels.MosaicModel)
                                                    else "DN/s" if isinstance(model, datamodels.ImageModel)
                                                    else "MJy/sr (filters' weighted mean, smoothed)")
    return title, unit


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="quicklook.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="a _cal (ImageModel) or _i2d (MosaicModel) product, "
                                                 "or a multiband catalog's _segm.asdf")
    parser.add_argument("output", type=Path, help="the PNG (written atomically)")
    parser.add_argument("--catalog", type=Path, help="the product's _cat.parquet: its sources drawn")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    catalog = read_catalog(args.catalog) if args.catalog else None
    with open_model(args.input, PRODUCT_MODELS) as model:
        data = shown_data(model)
        flagged = unusable_pixels(model)
        title, unit = describe(model, args.input, flagged)
    if catalog is not None:
        title += f"\n{len(catalog.x)} sources ({args.catalog.name}), circled"
    try:
        fig = quicklook_figure(data, flagged, title, unit, catalog)
    except ValueError as err:
        raise InputFileError(args.input, str(err)) from None
    with atomic_path(args.output) as staging:
        fig.savefig(staging, format="png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    cli.run_and_exit(main)
