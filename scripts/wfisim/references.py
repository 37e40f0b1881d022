"""The reference-file factory: CRDS-ready reference files that describe a simulated detector.

Each reftype is one :class:`ReferenceKind`: the roman_datamodels model, a
description, and a builder turning the detector truth into the model's arrays
(plus any selector metadata CRDS matches on). A new reftype is one more builder
in :data:`REFERENCE_KINDS`. Kinds that CRDS selects by optical element as well
as detector (DISTORTION, FLAT: their rmaps' parkeys are DETECTOR and
OPTICAL_ELEMENT) are made once per optical element of the campaign; PHOTOM
(parkey DETECTOR) holds every element in one table. DARK and READNOISE (parkeys
DETECTOR and EXPOSURE.TYPE) match both WFI_IMAGE and WFI_SPECTRAL exposures
(``p_exptype``).

Contents of the image-calibration references (units in the model's schema):

DISTORTION  ``coordinate_distortion_transform``: ``wfisim.pointing.distortion_model``,
            Level 2 pixel (0-based, of the simulated (N-8)^2 image) -> (v2, v3) arcsec
            from the SIAF, with ``.inverse``; ``meta.input_units`` "pixel",
            ``meta.output_units`` "arcsec"; the same transform for every optical element.
FLAT        ``data``/``err``/``dq`` from ``wfisim.flat`` (true flat x nominal gain / gain,
            a few NaN and 0 pixels), per imaging filter.
PHOTOM      ``phot_table`` from ``wfisim.photometry``.
EPSF        ``psf`` (1, 1, 1, 133, 133): ``wfisim.psf.epsf_stamp``, the PSF the simulator draws
            its stars with, per imaging filter (parkeys DETECTOR and OPTICAL_ELEMENT).
APCORR      ``data[<filter>]``: the encircled energy of that EPSF (``ee_fractions``, of the
            flux a star of the simulator holds) within ``ee_radii`` (pixels, 0.1 to 16 in
            steps of 0.1: a spline through them gives any aperture up to a star's stamp),
            ``ap_corrections`` = 1 / ``ee_fractions``; one file per detector (parkey DETECTOR)
            with a row for each imaging filter of the campaign; the sky annulus is left null
            (the catalog step has its own).

Files are named ``roman_wfi_<reftype>_<NNNN>.asdf`` (seed, "Reference File Naming
Convention"), NNNN one past the highest version of that reftype already present
in any of the given folders: CRDS files are immutable, so a changed reference
always gets a new name.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from romanpipe.crds_layout import next_reference_name
from romanpipe.dqflags import pixel
from romanpipe.products import write_atomic
from romanpipe.roman_psf import encircled_energy

import numpy as np
from astropy.time import Time
from roman_datamodels import datamodels

from .dark import DARK_REFERENCE_META, SCIENCE_EXPOSURE_TYPES, dark_reference_arrays
from .dark_decay import darkdecaysignal_table
from .detector import DetectorModel, detector_key
from .flat import flat_reference_arrays
from .nonlinearity import (
    inverse_linearity_reference_arrays,
    linearity_reference_arrays,
    nonlinear_response,
    saturation_threshold,
)
from .photometry import photom_reference_arrays
from .pointing import distortion_model
from .psf import CUTOUT_CENTRE_SCI, OVERSAMPLING, ROMAN_STAMP_HALF_WIDTH, epsf_stamp
from .refpix_effects import REFPIX_DESCRIPTION, build_refpix_reference, fits_readout_layout
from .scene import PIVOT_WAVELENGTH_UM

AUTHOR = "wfisim"
ORIGIN = "Roman WFI workflow simulator"
PEDIGREE = "SIMULATION"
# Pixels per detector whose SATURATION threshold is unknown (NaN) or not to be checked.
UNCHECKED_SATURATION_FRACTION = 1e-4

Builder = Callable[..., dict]  # (detector, rng) or, per optical element, (detector, rng, element)
IMAGING_ELEMENTS = frozenset(PIVOT_WAVELENGTH_UM)
SPECTRAL_ELEMENTS = frozenset({"GRISM", "PRISM"})


@dataclass(frozen=True)
class ReferenceKind:
    reftype: str
    model: type
    description: str
    build: Builder  # detector truth -> {model attribute: array}
    meta: dict = field(default_factory=dict)  # extra metadata, e.g. CRDS selectors
    # Shape for create_fake_data when the model's arrays are not (nrows, ncols): its
    # placeholder arrays are replaced anyway, and a full-size one would cost gigabytes.
    placeholder_shape: tuple[int, ...] | None = None
    # Kinds selected by optical element: the elements they are made for; None: one per detector.
    optical_elements: frozenset[str] | None = None
    # Kinds of one file per detector holding a row for each of the campaign's elements among these.
    row_elements: frozenset[str] | None = None

    def made_for(self, optical_element: str) -> bool:
        return self.optical_elements is not None and optical_element.upper() in self.optical_elements


def _mask(detector: DetectorModel, rng: np.random.Generator) -> dict:
    dq = np.zeros(detector.shape, dtype=np.uint32)
    dq[detector.dead] |= np.uint32(pixel.DEAD | pixel.DO_NOT_USE)
    dq[detector.hot] |= np.uint32(pixel.HOT | pixel.DO_NOT_USE)
    return {"dq": dq}


def _saturation(detector: DetectorModel, rng: np.random.Generator) -> dict:
    threshold = saturation_threshold(detector, nonlinear_response(detector))
    dq = np.zeros(detector.shape, dtype=np.uint32)
    light_sensitive = np.flatnonzero(~detector.reference_pixels)
    count = max(1, round(UNCHECKED_SATURATION_FRACTION * light_sensitive.size))
    unknown, unchecked = np.split(rng.choice(light_sensitive, 2 * count, replace=False), 2)
    threshold.flat[unknown] = np.nan
    dq.flat[unchecked] |= np.uint32(pixel.NO_SAT_CHECK)
    return {"data": threshold, "dq": dq}


def _gain(detector: DetectorModel, rng: np.random.Generator) -> dict:
    return {"data": detector.gain.astype(np.float32)}


def _readnoise(detector: DetectorModel, rng: np.random.Generator) -> dict:
    return {"data": detector.read_noise.astype(np.float32)}


def _epsf(detector: DetectorModel, rng: np.random.Generator, optical_element: str) -> dict:
    # One in-focus PSF of a flat spectrum at the cutout's centre: psf[defocus, spectrum, position].
    return {"psf": epsf_stamp(detector.name, optical_element)[None, None, None].astype(np.float32)}


# Every tenth of a pixel to the edge of a star's stamp: a cubic spline through them gives the
# encircled energy of a 0.1" aperture (0.9 pixel) to 3e-4 (every quarter pixel: 6e-3).
APCORR_RADII_PIXELS = np.arange(1, 10 * ROMAN_STAMP_HALF_WIDTH + 1) * 0.1


def _apcorr(detector: DetectorModel, rng: np.random.Generator, optical_elements: tuple[str, ...]) -> dict:
    from photutils.psf import ImagePSF

    rows = {}
    for element in optical_elements:
        ee = encircled_energy(ImagePSF(epsf_stamp(detector.name, element), oversampling=OVERSAMPLING),
                              APCORR_RADII_PIXELS)
        rows[element] = {"ee_fractions": ee, "ee_radii": APCORR_RADII_PIXELS.copy(),
                         "ap_corrections": 1.0 / ee, "sky_background_rin": None, "sky_background_rout": None}
    return {"data": rows}


# INTEGRALNONLINEARITY: 32 channels of 128 columns; the simulated A/D converter has no integral
# nonlinearity, so every channel's correction is zero on a grid of raw DN.
INL_CHANNELS = 32
INL_CHANNEL_COLUMNS = 128
INL_GRID_DN = np.append(np.arange(0, 65535, 256), 65535).astype(np.uint16)


def _integral_nonlinearity(detector: DetectorModel, rng: np.random.Generator) -> dict:
    table = {f"science_channel_{channel:02d}": {"instrument_channel": channel - 1,
                                                "correction": np.zeros(INL_GRID_DN.size)}
             for channel in range(1, INL_CHANNELS + 1)}
    return {"inl_table": table, "value": INL_GRID_DN.copy()}


def _distortion(detector: DetectorModel, rng: np.random.Generator, optical_element: str) -> dict:
    return {"coordinate_distortion_transform": distortion_model(detector.name, detector.shape).copy()}


REFERENCE_KINDS: dict[str, ReferenceKind] = {
    kind.reftype: kind
    for kind in (
        ReferenceKind("mask", datamodels.MaskRefModel,
                      "Simulated bad-pixel mask: DEAD and HOT pixels of the detector truth.", _mask),
        ReferenceKind("saturation", datamodels.SaturationRefModel,
                      "Simulated saturation thresholds (DN): bias + full well / gain, a few "
                      "read-noise sigmas below; some pixels NaN or NO_SAT_CHECK.", _saturation),
        ReferenceKind("gain", datamodels.GainRefModel, "Simulated gain (e/DN).", _gain),
        ReferenceKind("readnoise", datamodels.ReadnoiseRefModel,
                      "Simulated read noise (DN per read).", _readnoise,
                      meta={"exposure": {"type": "WFI_IMAGE", "p_exptype": SCIENCE_EXPOSURE_TYPES}}),
        ReferenceKind("linearity", datamodels.LinearityRefModel,
                      "Simulated classic nonlinearity: bias + P(F - bias) as a polynomial in raw DN F; "
                      "some pixels NaN or NO_LIN_CORR.", linearity_reference_arrays),
        ReferenceKind("inverselinearity", datamodels.InverselinearityRefModel,
                      "Simulated inverse of the classic nonlinearity: raw DN as a polynomial in "
                      "linear DN, fitted to the exact inverse.", inverse_linearity_reference_arrays),
        ReferenceKind("integralnonlinearity", datamodels.IntegralnonlinearityRefModel,
                      "Simulated integral nonlinearity: none (zero correction in every channel).",
                      _integral_nonlinearity, placeholder_shape=(1, 1),
                      meta={"n_channels": INL_CHANNELS, "n_pixels_per_channel": INL_CHANNEL_COLUMNS}),
        ReferenceKind("dark", datamodels.DarkRefModel,
                      "Simulated dark rate (DN/s): dark current / gain; HOT pixels flagged.",
                      dark_reference_arrays, meta=DARK_REFERENCE_META),
        ReferenceKind("refpix", datamodels.RefpixRefModel, REFPIX_DESCRIPTION, build_refpix_reference,
                      placeholder_shape=(1, 1)),
        ReferenceKind("distortion", datamodels.DistortionRefModel,
                      "Roman SIAF (pysiaf) distortion of the simulated cutout: "
                      "Level 2 pixel -> V2/V3 (arcsec).",
                      _distortion, meta={"input_units": "pixel", "output_units": "arcsec"},
                      placeholder_shape=(1, 1), optical_elements=IMAGING_ELEMENTS | SPECTRAL_ELEMENTS),
        ReferenceKind("flat", datamodels.FlatRefModel,
                      "Simulated flat: true response x nominal gain / pixel gain; a few NaN and 0 pixels.",
                      flat_reference_arrays, optical_elements=IMAGING_ELEMENTS),
        ReferenceKind("epsf", datamodels.EpsfRefModel,
                      "The simulator's Roman effective PSF (galsim, monochromatic at the filter's effective "
                      "wavelength, pixel-convolved), 4x oversampled over a star's 33 x 33-pixel stamp, "
                      "origin on the central sample, normalised as the stars are.",
                      _epsf, meta={"oversample": OVERSAMPLING, "spectral_type": ["flat"], "defocus": [0],
                                   "pixel_x": [CUTOUT_CENTRE_SCI - 1.0], "pixel_y": [CUTOUT_CENTRE_SCI - 1.0],
                                   "jitter_major": 0.0, "jitter_minor": 0.0, "jitter_position_angle": 0.0},
                      placeholder_shape=(1, 1, 1, 1, 1), optical_elements=IMAGING_ELEMENTS),
        ReferenceKind("apcorr", datamodels.ApcorrRefModel,
                      "The encircled energy of the simulator's Roman effective PSF (its EPSF reference) "
                      "within radii of 0.1 to 16 pixels, as a fraction of a simulated star's flux.",
                      _apcorr, row_elements=IMAGING_ELEMENTS),
        ReferenceKind("photom", datamodels.WfiImgPhotomRefModel,
                      "Simulated photometric calibration: MJy/sr per DN/s of the flat-fielded data.",
                      photom_reference_arrays, placeholder_shape=(1, 1)),
    )
}
DEFAULT_REFTYPES = tuple(REFERENCE_KINDS)


def reftypes_for(detector: DetectorModel) -> tuple[str, ...]:
    """The reftypes a detector of this size can have: REFPIX needs the 32-output readout layout."""
    return tuple(reftype for reftype in DEFAULT_REFTYPES
                 if reftype != "refpix" or fits_readout_layout(detector.shape))


def make_reference(reftype: str, detector: DetectorModel, *, useafter: Time | str,
                   optical_element: str | None = None, row_elements: Iterable[str] = ()):
    """The ``reftype`` reference model of ``detector``, valid from ``useafter``.

    ``optical_element``: required by (and only by) the kinds selected by optical element;
    ``row_elements``: the elements a kind of one row per element has rows for (those it is made for).
    """
    try:
        kind = REFERENCE_KINDS[reftype.lower()]
    except KeyError:
        raise ValueError(f"no reference factory for {reftype!r}; "
                         f"known: {', '.join(REFERENCE_KINDS)}") from None
    if (kind.optical_elements is None) != (optical_element is None):
        raise ValueError(f"{kind.reftype}: " + ("no optical element" if kind.optical_elements is None
                                                 else "an optical element is required"))
    if optical_element is not None and not kind.made_for(optical_element):
        raise ValueError(f"{kind.reftype}: no reference for optical element {optical_element!r}")
    # Each reftype (and optical element) has its own stream, so adding one leaves the others unchanged.
    stream = [detector.seed, detector_key(detector.name), zlib.crc32(kind.reftype.encode())]
    if optical_element is not None:
        stream.append(zlib.crc32(optical_element.upper().encode()))
    rng = np.random.default_rng(np.random.SeedSequence(stream))
    if kind.row_elements is not None:
        arrays = kind.build(detector, rng, _row_elements(kind, row_elements))
        instrument = kind.meta.get("instrument", {})
    elif optical_element is None:
        arrays = kind.build(detector, rng)
        instrument = kind.meta.get("instrument", {})
    else:
        arrays = kind.build(detector, rng, optical_element.upper())
        instrument = {**kind.meta.get("instrument", {}), "optical_element": optical_element.upper()}

    model = kind.model.create_fake_data(shape=kind.placeholder_shape or detector.shape)
    model.meta.update({
        "reftype": kind.reftype.upper(),
        "author": AUTHOR,
        "description": kind.description,
        "pedigree": PEDIGREE,
        "useafter": Time(useafter, format="isot", scale="utc"),
        "telescope": "ROMAN",
        "origin": ORIGIN,
        "instrument": {"name": "WFI", "detector": detector.name, **instrument},
        **{key: value for key, value in kind.meta.items() if key != "instrument"},
    })
    for name, array in arrays.items():
        setattr(model, name, array)
    return model


def write_references(detector: DetectorModel, directory: str | Path, *, useafter: Time | str,
                     reftypes: Iterable[str] | None = None, optical_elements: Iterable[str] = (),
                     also_taken: Iterable[str | Path] = ()) -> list[Path]:
    """Write the references of ``reftypes`` for ``detector``; return their paths.

    ``reftypes`` defaults to all the detector's size allows. A kind selected by
    optical element gets one file per element of ``optical_elements`` it is made
    for (none if there are none); ``also_taken``: further folders whose names count
    as used (e.g. the CRDS cache's).
    """
    also_taken = list(also_taken)
    elements = [element.upper() for element in optical_elements]
    reftypes = reftypes_for(detector) if reftypes is None else reftypes
    paths = []
    for reftype in reftypes:
        kind = REFERENCE_KINDS[reftype.lower()]
        if kind.row_elements is not None and not _row_elements(kind, elements):
            continue  # no row to hold
        for element in ([None] if kind.optical_elements is None
                        else [element for element in elements if kind.made_for(element)]):
            model = make_reference(reftype, detector, useafter=useafter, optical_element=element,
                                   row_elements=elements)
            paths.append(write_atomic(model, next_reference_path(directory, reftype, *also_taken)))
    return paths


def _row_elements(kind: ReferenceKind, elements: Iterable[str]) -> tuple[str, ...]:
    """The distinct elements among ``elements`` that ``kind`` has rows for, sorted."""
    return tuple(sorted({element.upper() for element in elements} & kind.row_elements))


def make_darkdecaysignal(detectors: Iterable[DetectorModel], *, useafter: Time | str, simulated: bool = True):
    """The DARKDECAYSIGNAL reference of a campaign: one table of every detector's decay (CRDS
    selects it by time only, so one file serves them all); amplitudes 0 unless ``simulated``."""
    model = datamodels.DarkdecaysignalRefModel.create_fake_data()
    model.meta.update({
        "reftype": "DARKDECAYSIGNAL", "author": AUTHOR, "pedigree": PEDIGREE, "telescope": "ROMAN",
        "description": "Simulated dark decay signal: amplitude (DN) and time constant (s) per detector.",
        "useafter": Time(useafter, format="isot", scale="utc"), "origin": ORIGIN,
    })
    model.decay_table = darkdecaysignal_table(detectors, simulated=simulated)
    return model


def write_darkdecaysignal(detectors: Iterable[DetectorModel], directory: str | Path, *,
                          useafter: Time | str, simulated: bool = True,
                          also_taken: Iterable[str | Path] = ()) -> Path:
    """Write the campaign's DARKDECAYSIGNAL reference (:func:`make_darkdecaysignal`); return its path."""
    model = make_darkdecaysignal(detectors, useafter=useafter, simulated=simulated)
    return write_atomic(model, next_reference_path(directory, "darkdecaysignal", *also_taken))


def next_reference_path(directory: str | Path, reftype: str, *also_taken: str | Path) -> Path:
    """``<directory>/roman_wfi_<reftype>_<NNNN>.asdf`` with a version no folder has used yet."""
    return Path(directory) / next_reference_name(reftype, directory, *also_taken)
