"""Roman models in and out of the drizzler: Level 2 images as Exposures, a Mosaic as a MosaicModel.

``exposure_from_model`` reads what drizzling needs from a rad 1.1 ImageModel (arrays
stay memory-mapped); ``mosaic_model`` builds the Level 3 product of the romancal
documentation, section "Resample": the arrays, ``meta.resample``, ``meta.coadd_info``,
the grid's ``meta.wcsinfo``, and the inputs' metadata blended (``blendheaders``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .drizzling import Exposure, Mosaic
from .output_grid import wcsinfo
from .resample_setup import VARIANCES

# rad's placeholder for a number that is not known.
PLACEHOLDER = -999999

# meta sections of the inputs tabulated in a mosaic's individual_image_meta (rad 1.1).
INDIVIDUAL_META_TABLES = (
    "background", "cal_step", "coordinates", "ephemeris", "exposure", "guide_star", "instrument",
    "observation", "photometry", "pointing", "program", "rcs", "ref_file", "velocity_aberration",
    "visit", "wcsinfo",
)
OBSERVATION_KEYS = ("execution_plan", "exposure", "observation", "pass", "program", "segment", "visit")
PROGRAM_KEYS = ("title", "investigator_name", "category", "subcategory", "science_category")
L3_CAL_STEPS = ("flux", "outlier_detection", "skymatch", "resample")


def exposure_from_model(model, name: str) -> Exposure:
    """An Exposure ``name`` over a Level 2 ImageModel's arrays (memory maps stay lazy).

    ValueError without a WCS. An image without an exposure group is its own, named ``name``.
    """
    from .products import exposure_group, plain_array

    wcs = model.meta.get("wcs")
    if wcs is None:
        raise ValueError("meta.wcs is not set (assign_wcs has not run)")
    exposure_meta = model.meta.get("exposure", {})
    exposure_time = _number(exposure_meta.get("exposure_time"))
    sky_level = 0.0
    background = model.meta.get("background")
    if background is not None and not background.get("subtracted", False):
        level = _number(background.get("level"))
        sky_level = level if np.isfinite(level) else 0.0
    return Exposure(
        name=name, data=plain_array(model.data), dq=plain_array(model.dq), wcs=wcs,
        err=plain_array(model.err) if "err" in model else None,
        variances={v: plain_array(model[v]) for v in VARIANCES if v in model},
        exposure_time=exposure_time if np.isfinite(exposure_time) and exposure_time > 0 else 1.0,
        sky_level=sky_level, group=exposure_group(model, name))


def mosaic_model(mosaic: Mosaic, models: Sequence, *, association_name: str, good_bits, weight_type,
                 pixfrac: float, blend: bool = True):
    """A validated-on-write rad 1.1 MosaicModel holding ``mosaic``; ``models`` are its inputs.

    ``blend`` (``blendheaders``, the romancal documentation, section "Resample")
    tabulates every input's metadata in ``individual_image_meta`` and keeps a value
    (observation, program, filter, cal_step) only where all inputs agree (else None,
    or INCOMPLETE for cal_step); without it the first input's values are used.
    """
    from astropy.time import Time
    from roman_datamodels import datamodels

    shape = mosaic.data.shape
    model = datamodels.MosaicModel.create_minimal()
    meta = model.meta
    meta.calibration_software_name = "roman-wfi-workflow"
    meta.calibration_software_version = _software_version()
    meta.product_type = "i2d"
    meta.association = {"name": str(association_name)}
    sources = list(models) if blend else list(models)[:1]

    meta.cal_step = {step: _agreed([m.meta.get("cal_step", {}).get(step, "INCOMPLETE") for m in sources],
                                   "INCOMPLETE") for step in L3_CAL_STEPS}
    meta.resample = {
        "good_bits": str(good_bits), "members": list(mosaic.members),
        "pixel_scale_ratio": float(mosaic.pixel_scale_ratio), "pixfrac": float(pixfrac),
        "pointings": len(mosaic.groups), "weight_type": str(weight_type),
    }
    meta.wcs = mosaic.wcs
    meta.wcsinfo = wcsinfo(mosaic.wcs, shape)

    exposures = [m.meta.get("exposure", {}) for m in models]
    starts = [Time(e["start_time"]) for e in exposures if e.get("start_time") is not None]
    ends = [Time(e["end_time"]) for e in exposures if e.get("end_time") is not None]
    now = Time.now()
    meta.coadd_info = {
        "time_first": min(starts) if starts else now, "time_last": max(ends) if ends else now,
        "time_mean": Time(starts).mean() if starts else now,
        "exposure_time": float(mosaic.exposure_time), "max_exposure_time": float(mosaic.max_exposure_time),
    }
    filters = [m.meta.get("instrument", {}).get("optical_element") for m in sources]
    meta.instrument = {"name": "WFI", "optical_element": _agreed(filters, None)}
    observation = {key: _agreed([_placeholder_none(m.meta.get("observation", {}).get(key)) for m in sources],
                                None) for key in OBSERVATION_KEYS}
    visit_keys = ("execution_plan", "pass", "segment", "observation", "visit")
    observation["exposure_grouping"] = (
        "v{execution_plan:02d}{pass:03d}{segment:03d}{observation:03d}{visit:03d}".format(**observation)
        if all(observation[key] is not None for key in visit_keys) else None)
    meta.observation = observation
    meta.program = {key: _agreed([_placeholder_none(m.meta.get("program", {}).get(key)) for m in sources],
                                 None) for key in PROGRAM_KEYS}
    meta.statistics = _statistics(mosaic.data, mosaic.weight)
    meta.individual_image_meta = _individual_image_meta(models) if blend else {}

    model.data = np.asarray(mosaic.data, dtype=np.float32)
    model.weight = np.asarray(mosaic.weight, dtype=np.float32)
    context = mosaic.context if mosaic.context is not None else np.zeros((1, *shape), np.int32)
    model.context = np.asarray(context).view(np.uint32)
    model.err = (np.asarray(mosaic.err, dtype=np.float32) if mosaic.err is not None
                 else np.zeros(shape, np.float32))
    for name in VARIANCES:
        if name in mosaic.variances:
            model[name] = np.asarray(mosaic.variances[name], dtype=np.float32)
        elif name != "var_flat":        # var_flat is optional in the schema, the others are not
            model[name] = np.zeros(shape, np.float32)
    return model


def _software_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("roman-wfi-workflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def _number(value) -> float:
    try:
        return float(getattr(value, "value", value))
    except (TypeError, ValueError):
        return float("nan")


def _placeholder_none(value):
    """rad's placeholders (-999999, '?') as None: they are no value."""
    return None if value in (PLACEHOLDER, "?") else value


def _agreed(values: list, default):
    """The common value of all inputs, else ``default``."""
    return values[0] if values and all(v == values[0] for v in values) else default


def _statistics(data: np.ndarray, weight: np.ndarray) -> dict:
    good = (weight > 0) & np.isfinite(data)
    if not good.any():
        return {"image_median": float("nan"), "image_rms": float("nan"), "good_pixel_fraction": 0.0}
    values = np.asarray(data[good], dtype=np.float64)
    return {"image_median": float(np.median(values)),
            "image_rms": float(np.mean(np.abs(values - values.mean()))),
            "good_pixel_fraction": float(good.mean())}


def _individual_image_meta(models: Sequence) -> dict:
    """One astropy Table per meta section, one row per input (nested values as strings)."""
    from astropy.table import Table
    from astropy.time import Time

    def cell(value):
        if isinstance(value, Time):
            return value.isot
        if isinstance(value, (bool, int, float, str, np.bool_, np.integer, np.floating)):
            return value
        return str(getattr(value, "value", value)) if value is not None else None

    tables = {}
    basic = [{key: cell(value) for key, value in m.meta.items()
              if not hasattr(value, "items") and key != "wcs"} for m in models]
    for name, rows in [("basic", basic)] + [
            (section, [{key: cell(value) for key, value in m.meta.get(section, {}).items()}
                       for m in models])
            for section in INDIVIDUAL_META_TABLES if any(section in m.meta for m in models)]:
        columns = {}
        keys = sorted({key for row in rows for key in row})
        for key in keys:
            values = [row.get(key) for row in rows]
            kinds = {type(v) for v in values}
            if None in values or len(kinds) > 1 or not kinds <= {bool, int, float, str, np.bool_,
                                                                np.int64, np.float64, np.float32}:
                values = [str(v) for v in values]
            columns[key] = values
        if columns:
            tables[name] = Table(columns)
    return tables
