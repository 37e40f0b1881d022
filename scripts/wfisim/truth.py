"""What was simulated, written beside each exposure as ``<expo>_truth.asdf`` (a plain ASDF tree).

Pixels: arrays are (nrows, ncols) of the full Level 1 *readout*, reference border
included; positions ``x`` (column), ``y`` (row) are 0-based readout pixels. The
Level 2 image (``_rampfit`` onward) drops the 4-pixel border, so

    Level 2 pixel (x2, y2) = readout pixel (x - 4, y - 4),   image[y2, x2] <-> truth array[y2 + 4, x2 + 4].

Tree (units in the key names):

``exposure``, ``exposure_type`` (WFI_IMAGE or WFI_SPECTRAL), ``optical_element``,
``ma_table_name``, ``read_pattern``, ``frame_time``, ``seed``, ``epoch_jyear``
(the exposure's start as a Julian year: stars sit at their positions of then)
    what was run.
``sky_e_per_s``; imaging also ``sky_dn_per_s`` and ``sky_mjy_per_sr``
    the sky per pixel before the flat: what a flat-fielded (DN/s) or photometrically
    calibrated (MJy/sr) image shows (``wfisim.photometry``).
``psf``
    ``model`` (gaussian or roman) and, for gaussian, ``fwhm_pixels`` (also kept as
    the top-level ``psf_fwhm_pixels``); spectral exposures use the Gaussian of F129.
``rate_e_per_s``
    the photo-electron rate the pixels collect: ``flat`` x (sky + stars), before the
    detector masks out border and dead pixels and adds dark current. The pixels
    digitise it with the per-pixel ``detector.gain_e_per_dn``.
``flat``
    the true relative response ``Q`` of every pixel (``wfisim.flat``); the FLAT
    reference is ``Q * photometry.nominal_gain_e_per_dn / gain`` where valid.
``photometry`` (imaging)
    ``nominal_gain_e_per_dn``, ``photmjsr`` ((MJy/sr)/(DN/s)), ``pixelareasr`` (sr): the
    PHOTOM values of this detector and filter.
``catalog``
    every star within ``stamp_half_width`` pixels of the readout (stars further out
    add no light): ``source_id`` (as in the sky and Gaia-like catalogs), ``x``, ``y``
    (readout pixels where the true attitude and the forward SIAF distortion put the
    star: where the PSF's origin sits, for the roman PSF too), ``ra``,
    ``dec`` (deg, true, at ``epoch_jyear``), ``flux_e_per_s`` (the star's photo-electron
    rate before the flat, summed over all its pixels); imaging also ``flux_dn_per_s``
    (= flux_e_per_s / nominal gain: what the star's flat-fielded pixels sum to) and
    ``flux_mjy`` (= flux_dn_per_s * photmjsr * pixelareasr: its calibrated flux).
``dispersion`` (spectral)
    ``axis`` "y" and ``first_pixel``/``last_pixel``: each star's light is spread evenly
    along rows y + first_pixel ... y + last_pixel of its column x.
``detector``
    ``name``, ``bias_dn``, ``gain_e_per_dn``, ``read_noise_dn``,
    ``dark_current_e_per_s``, ``full_well_e``, ``saturation_level_dn``,
    ``saturation_threshold_dn``, ``nominal_gain_e_per_dn``, and the masks ``dead``,
    ``hot``, ``ad_floor``, ``reference_pixels``.
``first_saturated_resultant``
    per pixel, index of the first resultant holding a read at full well; -1 if none.
``wcsinfo``
    the TRUE ``meta.wcsinfo`` (attitude the stars were placed with).
``wcsinfo_in_file``
    the ``meta.wcsinfo`` written into the exposure: the true attitude perturbed by
    ``pointing_error`` (equal to ``wcsinfo`` when the error is zero).
``pointing_error``
    ``offset_arcsec`` (how far WFI_CEN of the file's attitude lands from the true one
    on the sky), ``direction_deg`` (of that offset in the V2/V3 plane, from +V3
    towards +V2), ``roll_deg`` (file minus true position angle of the field about
    WFI_CEN). The exposure's detectors share one error.
``cosmic_rays`` (when simulated)
    every hit: ``row``, ``col``, ``read`` number, ``electrons`` deposited, and
    the ``ipc_fraction`` each of the four neighbours received.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import asdf
import numpy as np

from .detector import DetectorModel
from .matables import MaTable
from .scene import Catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ExposureTruth:
    exposure: str
    optical_element: str
    table: MaTable
    seed: list[int]
    sky: float
    psf: dict  # {"model": ..., "fwhm_pixels": ... (gaussian only)}
    rate: np.ndarray
    flat: np.ndarray
    catalog: Catalog
    ra: np.ndarray
    dec: np.ndarray
    source_id: np.ndarray
    detector: DetectorModel
    first_saturated_resultant: np.ndarray
    wcsinfo: dict
    wcsinfo_in_file: dict
    pointing_error: dict
    exposure_type: str = "WFI_IMAGE"
    epoch: float = 0.0  # Julian year
    photometry: dict | None = None  # nominal_gain_e_per_dn, photmjsr, pixelareasr (imaging)
    dispersion: dict | None = None  # spectral exposures
    cosmic_rays: dict | None = None  # wfisim.cosmic_rays.CosmicRays.truth() and the IPC fraction

    def tree(self) -> dict:
        detector = self.detector
        catalog = {"source_id": np.asarray(self.source_id, dtype=np.int64), "x": self.catalog.x,
                   "y": self.catalog.y, "ra": np.asarray(self.ra), "dec": np.asarray(self.dec),
                   "flux_e_per_s": self.catalog.flux}
        sky = {"sky_e_per_s": float(self.sky)}
        if self.photometry is not None:
            gain, photmjsr = self.photometry["nominal_gain_e_per_dn"], self.photometry["photmjsr"]
            catalog["flux_dn_per_s"] = self.catalog.flux / gain
            catalog["flux_mjy"] = catalog["flux_dn_per_s"] * photmjsr * self.photometry["pixelareasr"]
            sky["sky_dn_per_s"] = float(self.sky) / gain
            sky["sky_mjy_per_sr"] = sky["sky_dn_per_s"] * photmjsr
        optional = {"photometry": self.photometry, "dispersion": self.dispersion,
                    "cosmic_rays": self.cosmic_rays}
        psf_fwhm = {"psf_fwhm_pixels": float(self.psf["fwhm_pixels"])} if "fwhm_pixels" in self.psf else {}
        return {
            "exposure": self.exposure,
            "exposure_type": self.exposure_type,
            "optical_element": self.optical_element,
            "ma_table_name": self.table.name,
            "read_pattern": self.table.read_pattern_lists(),
            "frame_time": self.table.frame_time,
            "seed": [int(value) for value in self.seed],
            "epoch_jyear": float(self.epoch),
            **sky,
            "psf": dict(self.psf),
            **psf_fwhm,
            "rate_e_per_s": self.rate.astype(np.float32),
            "flat": self.flat.astype(np.float32),
            "catalog": catalog,
            "detector": {
                "name": detector.name,
                "bias_dn": detector.bias,
                "gain_e_per_dn": detector.gain,
                "nominal_gain_e_per_dn": float(detector.nominal_gain),
                "read_noise_dn": detector.read_noise,
                "dark_current_e_per_s": detector.dark_current,
                "full_well_e": detector.full_well,
                "saturation_level_dn": detector.saturation_level,
                "saturation_threshold_dn": detector.saturation_threshold,
                "dead": detector.dead,
                "hot": detector.hot,
                "ad_floor": detector.ad_floor,
                "reference_pixels": detector.reference_pixels,
            },
            "first_saturated_resultant": self.first_saturated_resultant,
            "wcsinfo": dict(self.wcsinfo),
            "wcsinfo_in_file": dict(self.wcsinfo_in_file),
            "pointing_error": {key: float(value) for key, value in self.pointing_error.items()},
            **{key: value for key, value in optional.items() if value is not None},
        }

    def write(self, path: str | Path) -> Path:
        """Write the tree; ``path`` only ever holds a complete file."""
        return write_tree(self.tree(), path)


def write_tree(tree: dict, path: str | Path) -> Path:
    """Write a truth ``tree`` as plain ASDF; ``path`` only ever holds a complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        asdf.AsdfFile(tree).write_to(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    log.info("wrote %s", path)
    return path


def read_truth(path: str | Path) -> dict:
    """The truth tree of ``path`` with every array in memory."""
    with asdf.open(path, lazy_load=False, memmap=False) as af:
        return _materialize({key: value for key, value in af.tree.items()
                             if key not in ("asdf_library", "history")})


def _materialize(node):
    if isinstance(node, dict):
        return {key: _materialize(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_materialize(value) for value in node]
    if hasattr(node, "__array__") and not np.isscalar(node):
        return np.array(node)
    return node
