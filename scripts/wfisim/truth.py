"""What was simulated, written beside each exposure as ``<expo>_truth.asdf`` (a plain ASDF tree).

Tree (units in the key names; arrays are (nrows, ncols) of the full readout):

``exposure``, ``optical_element``, ``ma_table_name``, ``read_pattern``, ``frame_time``, ``seed``
    what was run.
``sky_e_per_s``, ``psf_fwhm_pixels``, ``rate_e_per_s``
    the scene: sky level, PSF width, and the photo-electron rate image (sky +
    stars, before the detector masks out border and dead pixels).
``catalog``
    ``x``, ``y`` (detector pixels of this exposure), ``ra``, ``dec`` (deg),
    ``flux_e_per_s``.
``detector``
    ``name``, ``bias_dn``, ``gain_e_per_dn``, ``read_noise_dn``,
    ``dark_current_e_per_s``, ``full_well_e``, ``saturation_level_dn``,
    ``saturation_threshold_dn``, and the masks ``dead``, ``hot``, ``ad_floor``,
    ``reference_pixels``.
``first_saturated_resultant``
    per pixel, index of the first resultant holding a read at full well; -1 if none.
``wcsinfo``
    the ``meta.wcsinfo`` written into the exposure.
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
    psf_fwhm_pixels: float
    rate: np.ndarray
    catalog: Catalog
    ra: np.ndarray
    dec: np.ndarray
    detector: DetectorModel
    first_saturated_resultant: np.ndarray
    wcsinfo: dict
    cosmic_rays: dict | None = None  # wfisim.cosmic_rays.CosmicRays.truth() and the IPC fraction

    def tree(self) -> dict:
        detector = self.detector
        return {
            "exposure": self.exposure,
            "optical_element": self.optical_element,
            "ma_table_name": self.table.name,
            "read_pattern": self.table.read_pattern_lists(),
            "frame_time": self.table.frame_time,
            "seed": [int(value) for value in self.seed],
            "sky_e_per_s": float(self.sky),
            "psf_fwhm_pixels": float(self.psf_fwhm_pixels),
            "rate_e_per_s": self.rate.astype(np.float32),
            "catalog": {"x": self.catalog.x, "y": self.catalog.y, "ra": np.asarray(self.ra),
                        "dec": np.asarray(self.dec), "flux_e_per_s": self.catalog.flux},
            "detector": {
                "name": detector.name,
                "bias_dn": detector.bias,
                "gain_e_per_dn": detector.gain,
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
            **({"cosmic_rays": self.cosmic_rays} if self.cosmic_rays is not None else {}),
        }

    def write(self, path: str | Path) -> Path:
        """Write the tree; ``path`` only ever holds a complete file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            asdf.AsdfFile(self.tree()).write_to(tmp)
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
