"""quicklook: a PNG of a calibrated image or mosaic for the report, flagged pixels marked.

The data are shown with an asinh stretch between the 0.5th and 99.8th percentiles of the
usable pixels (bright stars stay visible against the noise of the sky); pixels that carry
DO_NOT_USE in a `_cal` image, or that no input covered in a mosaic (weight 0), are
painted red. The title names the product, its optical element and the share of flagged
pixels.

    python scripts/quicklook.py results/exposures/<expo>_cal.asdf results/quicklook/<expo>_cal.png
"""

from __future__ import annotations

import argparse
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


def unusable_pixels(model) -> np.ndarray:
    """Pixels not to trust: DO_NOT_USE in an image, no coverage in a mosaic, any non-finite value."""
    data = np.asarray(model.data)
    if isinstance(model, datamodels.MosaicModel):
        flagged = np.asarray(model.weight) <= 0
    else:
        flagged = (np.asarray(model.dq) & dqflags.pixel.DO_NOT_USE) != 0
    return flagged | ~np.isfinite(data)


def quicklook_figure(data: np.ndarray, flagged: np.ndarray, title: str, unit: str):
    """The figure: asinh-stretched data, flagged pixels in red, a colour bar in the data's unit."""
    usable = data[~flagged]
    if usable.size == 0:
        raise ValueError("no usable pixel to show")
    norm = ImageNormalize(usable, interval=AsymmetricPercentileInterval(0.5, 99.8),
                          stretch=AsinhStretch(0.02))
    cmap = plt.get_cmap("gray").with_extremes(bad=FLAGGED_COLOUR)
    shown = np.ma.masked_array(data, mask=flagged)
    height, width = data.shape
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * height / width + 0.6), layout="constrained")
    image = ax.imshow(shown, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label=unit)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    return fig


def describe(model, path: Path, flagged: np.ndarray) -> tuple[str, str]:
    """The figure's title and the data's unit."""
    element = model.meta.instrument.get("optical_element", "?")
    share = 100.0 * flagged.mean()
    title = f"{path.name}\n{element}, asinh stretch; red: flagged or uncovered ({share:.2f} % of pixels)"
    unit = str(getattr(model.data, "unit", "")) or ("MJy/sr" if isinstance(model, datamodels.MosaicModel)
                                                    else "DN/s")
    return title, unit


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="quicklook.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="a _cal (ImageModel) or _i2d (MosaicModel) product")
    parser.add_argument("output", type=Path, help="the PNG (written atomically)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    with open_model(args.input, (datamodels.ImageModel, datamodels.MosaicModel)) as model:
        data = np.asarray(model.data, dtype=np.float32)
        flagged = unusable_pixels(model)
        title, unit = describe(model, args.input, flagged)
    try:
        fig = quicklook_figure(data, flagged, title, unit)
    except ValueError as err:
        raise InputFileError(args.input, str(err)) from None
    with atomic_path(args.output) as staging:
        fig.savefig(staging, format="png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    cli.run_and_exit(main)
