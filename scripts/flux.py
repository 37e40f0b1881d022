"""flux: scale a count-rate image (DN/s) to surface brightness (MJy/sr).

Seed, "Flux": data and ERR are multiplied by ``meta.photometry.conversion_megajanskys``
and every variance array by its square. An image whose ``cal_step.flux`` is already
COMPLETE is in MJy/sr: it is passed on unchanged (no second application). The first
step of the high-level chain: like romancal's, it takes one image or an association, whose
members are then written as ``<member>_flux.asdf`` beside the output association.

    python scripts/flux.py r..._cal.asdf r..._flux.asdf
    python scripts/flux.py r00001-a3001_..._asn.json mosaics/r00001-a3001_..._flux_asn.json
"""

from __future__ import annotations

import logging

from romanpipe import cli
from romanpipe.errors import InputFileError
from romanpipe.naming import STEP_SUFFIX
from romanpipe.products import COMPLETE, open_model
from romanpipe.steprun import run_association_script, write_association_products, write_product

import numpy as np
from roman_datamodels import datamodels

log = logging.getLogger("flux")

STEP = "flux"
VARIANCES = ("var_poisson", "var_rnoise", "var_flat")


def scale_to_flux(arrays: dict[str, np.ndarray], conversion: float) -> dict[str, np.ndarray]:
    """``data`` and ``err`` times ``conversion``, variances times its square (same dtypes)."""
    scaled = {}
    for name, array in arrays.items():
        factor = conversion**2 if name in VARIANCES else conversion
        scaled[name] = (np.asarray(array, dtype=np.float32) * np.float32(factor)).astype(array.dtype)
    return scaled


def flux_image(path):
    """The image at ``path`` in MJy/sr (a new model)."""
    image = open_model(path, (datamodels.ImageModel,))
    output = image.copy()
    if image.meta.get("cal_step", {}).get("flux") == COMPLETE:
        log.info("%s is already in MJy/sr: flux not applied again", path)
        return output
    conversion = image.meta.photometry.get("conversion_megajanskys")
    if conversion is None or not np.isfinite(conversion) or conversion <= 0:
        raise InputFileError(path, f"no valid meta.photometry.conversion_megajanskys "
                                   f"({conversion!r}): run photom first")
    names = ["data", "err", *(name for name in VARIANCES if name in image)]
    for name, array in scale_to_flux({name: np.asarray(image[name]) for name in names},
                                     float(conversion)).items():
        output[name] = array
    log.info("%s scaled by %g MJy/sr per DN/s", path.name, conversion)
    return output


def flux_association(association, paths, args, parameters) -> None:
    """Each science member in MJy/sr, one at a time, beside ``args.output`` (which lists them)."""
    write_association_products((flux_image(member) for member in paths), association, args.output, STEP,
                               STEP_SUFFIX[STEP], args, parameters)


def flux_file(args, parameters) -> None:
    write_product(flux_image(args.input), args.output, STEP, args, parameters)


def main(argv=None) -> None:
    run_association_script(STEP, __doc__, flux_association, flux_file, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
