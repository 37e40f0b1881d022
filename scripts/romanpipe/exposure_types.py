"""Which exposure-level steps apply to which exposure type (meta.exposure.type).

As romancal 1.1's ExposurePipeline: every type gets the detector-level steps and
ramp fitting; imaging (WFI_IMAGE, WFI_LOLO) then goes through the whole image
chain; wavefront-sensing images (WFI_WFSC) get no source catalog and so no
tweakreg; spectroscopic (WFI_SPECTRAL: grism or prism) and calibration exposures
(darks, flats) stop after assign_wcs (issue: "spectroscopic exposures stop after
assign_wcs and become _cal"). Types are those of the rad schema's enum; anything
else is not a Roman WFI exposure type and its file is quarantined.
"""

from __future__ import annotations

RAMP_STEPS = ("dq_init", "saturation", "refpix", "linearity", "dark_current", "jump", "ramp_fit")
IMAGE_STEPS = ("assign_wcs", "flat_field", "photom", "source_detection", "tweakreg")
EXPOSURE_STEPS = RAMP_STEPS + IMAGE_STEPS

# Dark exposures (imaging and spectroscopic): the ground-test superbias and DARK references
# are fitted from them.
DARK_TYPES = ("WFI_IM_DARK", "WFI_SP_DARK")

_IMAGE_STEPS_BY_TYPE = {
    "WFI_IMAGE": IMAGE_STEPS,
    "WFI_LOLO": IMAGE_STEPS,
    "WFI_WFSC": ("assign_wcs", "flat_field", "photom"),
    "WFI_SPECTRAL": ("assign_wcs",),
    **dict.fromkeys(DARK_TYPES, ("assign_wcs",)),
    "WFI_FLAT": ("assign_wcs",),
}
EXPOSURE_TYPES = tuple(_IMAGE_STEPS_BY_TYPE)
# Types whose _cal products go on to the high-level (mosaic) processing.
MOSAIC_TYPES = ("WFI_IMAGE",)


# rad's TVAC exposure types that the science schemas (RampModel onwards) name differently.
GROUNDTEST_EXPOSURE_TYPES = {
    "WFI_DARK": "WFI_IM_DARK", "WFI_GRISM": "WFI_SPECTRAL", "WFI_PRISM": "WFI_SPECTRAL",
}


def science_exposure_type(exposure_type: str) -> str:
    """The science schemas' name of an exposure type (ground-test files use rad's TVAC names)."""
    return GROUNDTEST_EXPOSURE_TYPES.get(exposure_type, exposure_type)


def applicable_steps(exposure_type: str) -> tuple[str, ...]:
    """The exposure-level steps, in order, that apply to ``exposure_type``; ValueError if unknown."""
    try:
        return RAMP_STEPS + _IMAGE_STEPS_BY_TYPE[exposure_type.upper()]
    except KeyError:
        raise ValueError(f"unknown exposure type {exposure_type!r} "
                         f"(known: {', '.join(EXPOSURE_TYPES)})") from None
