"""The exposure-level chains (which steps run, in which order) and which steps apply to which
exposure type (meta.exposure.type).

Two chains, each defined once here (the workflow's ``exposure_chain`` picks one):
``documented``, the romancal documentation's order (the default), and ``romancal-1.1``,
the order of romancal 1.1's ExposurePipeline: dark_decay and wfi18_transient after refpix,
linearity, ramp fitting of the ramp with its dark still in it, then dark_current on the
rate image; no separate jump step. Both chains share the image steps, in our order
(romancal 1.1 runs photom before flat_field; photom only records conversion factors,
so the products are the same).

As romancal 1.1's ExposurePipeline: every type gets the detector-level steps and
ramp fitting; imaging (WFI_IMAGE, WFI_LOLO) then goes through the whole image
chain; wavefront-sensing images (WFI_WFSC) get no source catalog and so no
tweakreg; spectroscopic (WFI_SPECTRAL: grism or prism) and calibration exposures
(darks, flats) stop after assign_wcs (issue: "spectroscopic exposures stop after
assign_wcs and become _cal"). Types are those of the rad schema's enum; anything
else is not a Roman WFI exposure type and its file is quarantined.
"""

from __future__ import annotations

IMAGE_STEPS = ("assign_wcs", "flat_field", "photom", "source_detection", "tweakreg")
CHAINS = {
    "documented": ("dq_init", "saturation", "refpix", "linearity", "dark_current", "jump", "ramp_fit",
                   *IMAGE_STEPS),
    "romancal-1.1": ("dq_init", "saturation", "refpix", "dark_decay", "wfi18_transient", "linearity",
                     "ramp_fit", "dark_current", *IMAGE_STEPS),
}
DEFAULT_CHAIN = "documented"
# Every exposure-level step of any chain: the documented order with the other chains' steps
# inserted where they run.
EXPOSURE_STEPS = ("dq_init", "saturation", "refpix", "dark_decay", "wfi18_transient", "linearity",
                  "dark_current", "jump", "ramp_fit", *IMAGE_STEPS)

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


def chain_steps(chain: str) -> tuple[str, ...]:
    """The steps of the named chain, in the order they run; ValueError if unknown."""
    try:
        return CHAINS[chain]
    except KeyError:
        raise ValueError(f"unknown exposure chain {chain!r} (known: {', '.join(CHAINS)})") from None


def applicable_steps(exposure_type: str, chain: str | None = None) -> tuple[str, ...]:
    """The steps of ``chain`` (default: every exposure-level step), in order, that apply to
    ``exposure_type``; ValueError if either is unknown."""
    steps = EXPOSURE_STEPS if chain is None else chain_steps(chain)
    try:
        image_steps = _IMAGE_STEPS_BY_TYPE[exposure_type.upper()]
    except KeyError:
        raise ValueError(f"unknown exposure type {exposure_type!r} "
                         f"(known: {', '.join(EXPOSURE_TYPES)})") from None
    return tuple(step for step in steps if step not in IMAGE_STEPS or step in image_steps)


def makes_catalog(exposure_type: str) -> bool:
    """Whether the ``_cal`` of ``exposure_type`` gets a source catalog: an image tweakreg aligns."""
    return "tweakreg" in applicable_steps(exposure_type)
