"""Level 1 (``_uncal``) files: a ScienceRawModel with the resultants and realistic metadata.

Every value is a function of the inputs, except ``meta.file_date``, which
roman_datamodels stamps with the wall clock whenever a model is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from romanpipe.naming import exposure_name
from romanpipe.products import write_atomic

import numpy as np
from astropy.time import Time, TimeDelta
from roman_datamodels import datamodels

from .matables import MaTable

IMAGING_EXPOSURE_TYPE = "WFI_IMAGE"
# rad 1.1's exposure-type enum has one spectroscopic mode; the optical element (GRISM or PRISM) tells which.
SPECTRAL_EXPOSURE_TYPE = "WFI_SPECTRAL"


@dataclass(frozen=True)
class ExposureId:
    """The observation identifiers that name a Roman exposure (seed, "File Naming Schemes")."""

    program: int = 1
    execution_plan: int = 1
    pass_: int = 1
    segment: int = 1
    observation: int = 1
    visit: int = 1
    visit_file_group: int = 1
    visit_file_sequence: int = 1
    visit_file_activity: str = "01"
    exposure: int = 1

    def name(self, detector: str) -> str:
        """``r<ppppp><cc><aaa><sss><ooo><vvv>_<gg><s><aa>_<eeee>_<detector>``."""
        return exposure_name(**asdict(self), detector=detector)

    @property
    def visit_id(self) -> str:
        return (f"{self.program:05d}{self.execution_plan:02d}{self.pass_:03d}"
                f"{self.segment:03d}{self.observation:03d}{self.visit:03d}")

    def observation_metadata(self) -> dict:
        fields = asdict(self)
        fields["pass"] = fields.pop("pass_")
        return {
            **fields,
            "visit_id": self.visit_id,
            "observation_id": (f"{self.visit_id}{self.visit_file_group:02d}{self.visit_file_sequence:1d}"
                               f"{self.visit_file_activity:>02}{self.exposure:04d}"),
            "wfi_parallel": False,
        }


def make_level1(resultants: np.ndarray, amp33: np.ndarray, *, exposure_id: ExposureId, detector: str,
                optical_element: str, table: MaTable, start_time: Time, wcsinfo: dict,
                pointing: dict, visit: dict | None = None, program: dict | None = None,
                exposure_type: str = IMAGING_EXPOSURE_TYPE):
    """A ScienceRawModel of one exposure; ``resultants`` and ``amp33`` are uint16 cubes."""
    if resultants.dtype != np.uint16 or amp33.dtype != np.uint16:
        raise TypeError("Level 1 data and amp33 are uint16")
    if resultants.shape[0] != table.nresultants:
        raise ValueError(f"{resultants.shape[0]} resultants for an MA table of {table.nresultants}")
    start_time = Time(start_time, format="isot", scale="utc")
    end_time = start_time + TimeDelta(table.exposure_time, format="sec")

    # Tiny fake arrays: data and amp33 are replaced below, so no full-size fake cube is allocated.
    model = datamodels.ScienceRawModel.create_fake_data(shape=(table.nresultants, 1, 1))
    meta = model.meta
    meta.filename = f"{exposure_id.name(detector)}_uncal.asdf"
    meta.product_type = "l1"
    meta.observation.update(exposure_id.observation_metadata())
    meta.instrument.update({"name": "WFI", "detector": detector.upper(),
                            "optical_element": optical_element.upper()})
    meta.exposure.update({
        "type": exposure_type,
        "start_time": start_time,
        "end_time": end_time,
        "engineering_quality": "OK",
        "ma_table_id": str(table.number),
        "nresultants": table.nresultants,
        "data_problem": None,
        "frame_time": table.frame_time,
        "exposure_time": table.exposure_time,
        "effective_exposure_time": table.effective_exposure_time,
        "ma_table_name": table.name,
        "ma_table_number": table.number,
        "read_pattern": table.read_pattern_lists(),
        "truncated": False,
        "hga_move": False,
    })
    meta.wcsinfo.update(wcsinfo)
    meta.pointing.update(pointing)
    # No velocity aberration is simulated: the aberrated reference is the reference.
    meta.velocity_aberration.update({"ra_reference": wcsinfo["ra_ref"],
                                     "dec_reference": wcsinfo["dec_ref"], "scale_factor": 1.0})
    meta.visit.update({"type": "PRIME_TARGETED_FIXED", "start_time": start_time, "nexposures": 1,
                       "internal_target": False, **(visit or {})})
    meta.program.update({"title": "Simulated WFI imaging", "investigator_name": "wfisim",
                         "category": "CAL", "subcategory": "WFI",
                         "science_category": "simulation", **(program or {})})
    model.data = resultants
    model.amp33 = amp33
    return model


def write_level1(model, directory: str | Path) -> Path:
    """Validate and write ``model`` as ``<directory>/<its meta.filename>``."""
    return write_atomic(model, Path(directory) / model.meta.filename)
