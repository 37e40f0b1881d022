"""photom: record the flux calibration of the exposure's optical element (pixels untouched).

Seed, "Photometric Calibration": the PHOTOM reference's ``phot_table`` row for
``meta.instrument.optical_element`` gives ``photmjsr`` (MJy/sr per DN/s), its
uncertainty and ``pixelareasr``. They go into ``meta.photometry``: the schema's
``conversion_megajanskys``, ``conversion_megajanskys_uncertainty`` and
``pixel_area``, plus the ``conversion_microjanskys`` of the romancal documentation (section
"Photometric Calibration") (+ uncertainty) in
uJy/arcsec^2 (converted, not copied) and ``pixelarea_steradians`` /
``pixelarea_arcsecsq``. A row without values (spectral elements, DARK) leaves
them null; an element missing from the table is an error naming the reference.

    python scripts/photom.py r..._flat.asdf r..._photom.asdf --override-photom P
"""

from __future__ import annotations

import logging

from romanpipe import cli
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE, open_model
from romanpipe.refs import element_row
from romanpipe.steprun import StepRun, run_script

import numpy as np
from astropy import units as u
from roman_datamodels import datamodels

log = logging.getLogger("photom")

STEP = "photom"
INPUT_MODELS = (datamodels.ImageModel,)
MJY_PER_SR_TO_UJY_PER_ARCSEC2 = float((1.0 * u.MJy / u.sr).to_value(u.uJy / u.arcsec**2))
SR_TO_ARCSEC2 = float((1.0 * u.sr).to_value(u.arcsec**2))


def photometry_keywords(phot_table, optical_element: str) -> dict[str, float | None]:
    """``meta.photometry`` for ``optical_element`` from a PHOTOM table; LookupError if it has no row."""
    row = element_row(phot_table, optical_element, STEP)
    conversion, uncertainty, area = (_scalar(row.get(key))
                                     for key in ("photmjsr", "uncertainty", "pixelareasr"))
    return {
        "conversion_megajanskys": conversion,
        "conversion_megajanskys_uncertainty": uncertainty,
        "pixel_area": area,
        "conversion_microjanskys": _scaled(conversion, MJY_PER_SR_TO_UJY_PER_ARCSEC2),
        "conversion_microjanskys_uncertainty": _scaled(uncertainty, MJY_PER_SR_TO_UJY_PER_ARCSEC2),
        "pixelarea_steradians": area,
        "pixelarea_arcsecsq": _scaled(area, SR_TO_ARCSEC2),
    }


def run(image, step: StepRun):
    """``image`` (an ImageModel) with the PHOTOM keywords of its optical element (a new model)."""
    photom_path = step.reference("photom")
    element = str(image.meta.instrument.optical_element)
    with open_model(photom_path, (datamodels.WfiImgPhotomRefModel,), memmap=False) as reference:
        try:
            keywords = photometry_keywords(reference.phot_table, element)
        except LookupError as err:
            raise InputFileError(photom_path, str(err)) from None
    output = image.copy()
    output.meta.photometry = keywords
    log.info("%s: %s MJy/sr per DN/s, pixel area %s sr", element, keywords["conversion_megajanskys"],
             keywords["pixel_area"])
    return output, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


def _scalar(value) -> float | None:
    if value is None:
        return None
    return float(getattr(value, "value", value))


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else float(np.float64(value) * factor)


if __name__ == "__main__":
    cli.run_and_exit(main)
