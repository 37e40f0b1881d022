"""dq_init: turn a Level 1 exposure into a RampModel and initialize its data quality.

Seed, "Data Quality (DQ) Initialization": the MASK reference's flags are OR-ed
into PIXELDQ (into DQ for guide-star exposures), missing data flagged in the
optional resultant DQ are carried into GROUPDQ, the data become float32, and the
4-pixel reference border is copied into the border_ref_pix_* arrays with their
DQ. The border pixels are also flagged REFERENCE_PIXEL.

Guide window (romancal's DQInitStep, "Flagging rows from: <xstart> to <xstop> as
affected by guide window read"): the window's position comes from the Level 1
metadata, ``meta.guide_star.window_{x,y}{start,stop}`` of a ScienceRawModel or
``meta.guidestar.gw_window_{x,y}{start,stop}`` of a ground-test TvacModel, in readout
pixels with exclusive stops. Array columns ``xstart:xstop`` (romancal's "rows": its
log names the x range) are flagged GW_AFFECTED_DATA in every row, and the window
itself, rows ``ystart:ystop`` of those columns, also DO_NOT_USE. A window whose start
lies outside the array (unset metadata is -999999) flags nothing. Where we differ:
romancal 1.1 converts a TvacModel to a ScienceRawModel first and so reads the
placeholder ``guide_star`` values, never the TVAC window (the seed's log shows
-999999); we read the TVAC record. TVAC exposure types become the science schemas'
(WFI_DARK -> WFI_IM_DARK, WFI_GRISM and WFI_PRISM -> WFI_SPECTRAL).

    python scripts/dq_init.py r..._uncal.asdf r..._dqinit.asdf [--override-mask FILE]
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

from romanpipe import cli, dqflags
from romanpipe.detector import BORDER
from romanpipe.exposure_types import science_exposure_type
from romanpipe.products import open_level1, open_model, plain_array
from romanpipe.steprun import parse_step_args, reference_file, write_product

import astropy.units as u
import numpy as np
from astropy.time import Time
from roman_datamodels import datamodels

log = logging.getLogger("dq_init")

STEP = "dq_init"

# Seed: guide-star data carry the MASK flags in "dq" instead of "pixeldq".
GUIDE_STAR_EXPOSURE_TYPES = frozenset(
    {"WFI_WIM_ACQ", "WFI_WIM_TRACK", "WFI_WSM_ACQ1", "WFI_WSM_ACQ2", "WFI_WSM_TRACK"}
)


def initialize_dq(mask_dq, resultant_dq, shape, *, flags=dqflags.pixel):
    """PIXELDQ and GROUPDQ of a new ramp. Pure: inputs are never modified.

    mask_dq       (nrows, ncols) uint32 MASK flags, or None for no mask.
    resultant_dq  (nresultants, nrows, ncols) missing-data flags from data
                  formatting, or None when the Level 1 file has none.
    shape         (nresultants, nrows, ncols) of the ramp.
    """
    _, nrows, ncols = shape
    pixeldq = np.zeros((nrows, ncols), dtype=np.uint32)
    if mask_dq is not None:
        if mask_dq.shape != (nrows, ncols):
            raise ValueError(f"MASK dq has shape {mask_dq.shape}, the data {(nrows, ncols)}")
        pixeldq |= mask_dq.astype(np.uint32, copy=False)
    border = np.ones((nrows, ncols), dtype=bool)
    border[BORDER:-BORDER, BORDER:-BORDER] = False
    pixeldq[border] |= np.uint32(flags["REFERENCE_PIXEL"])

    if resultant_dq is None:
        groupdq = np.zeros(shape, dtype=np.uint8)
    else:
        if resultant_dq.shape != tuple(shape):
            raise ValueError(f"resultantdq has shape {resultant_dq.shape}, the data {tuple(shape)}")
        groupdq = resultant_dq.astype(np.uint8, copy=True)
    return pixeldq, groupdq


def guide_window(level1) -> tuple[int, int, int, int] | None:
    """(xstart, xstop, ystart, ystop) of the exposure's guide window from its metadata; None if absent."""
    if isinstance(level1, datamodels.TvacModel):
        record, prefix = level1.meta.get("guidestar"), "gw_window_"
    else:
        record, prefix = level1.meta.get("guide_star"), "window_"
    try:
        return tuple(int(record[f"{prefix}{edge}"]) for edge in ("xstart", "xstop", "ystart", "ystop"))
    except (KeyError, TypeError, ValueError):
        return None


def guide_window_flags(shape, window, *, flags=dqflags.pixel):
    """PIXELDQ bits (uint32, ``shape`` = (nrows, ncols)) of a guide window (xstart, xstop, ystart, ystop).

    Columns xstart:xstop get GW_AFFECTED_DATA in every row, the window itself also
    DO_NOT_USE; nothing when ``window`` is None or starts outside the array.
    """
    nrows, ncols = shape
    bits = np.zeros(shape, dtype=np.uint32)
    if window is None:
        return bits
    xstart, xstop, ystart, ystop = window
    if not (0 <= xstart < ncols and 0 <= ystart < nrows):
        log.info("no guide window to flag: start (%d, %d) is outside the %dx%d array", xstart, ystart,
                 ncols, nrows)
        return bits
    affected = np.uint32(flags["GW_AFFECTED_DATA"])
    bits[:, xstart:xstop] = affected
    bits[ystart:ystop, xstart:xstop] |= np.uint32(flags["DO_NOT_USE"])
    log.info("Flagging rows from: %d to %d as affected by guide window read (array columns; the window "
             "rows %d to %d also DO_NOT_USE)", xstart, min(xstop, ncols), ystart, min(ystop, nrows))
    return bits


def to_ramp_model(level1, mask_dq):
    """A RampModel with the Level 1 metadata, float32 data and initialized DQ."""
    raw = plain_array(level1.data)
    exposure_type = science_exposure_type(str(level1.meta.exposure.type))
    resultant_dq = plain_array(level1.resultantdq) if "resultantdq" in level1 else None
    is_guide_star = exposure_type in GUIDE_STAR_EXPOSURE_TYPES

    pixeldq, groupdq = initialize_dq(None if is_guide_star else mask_dq, resultant_dq, raw.shape)
    pixeldq |= guide_window_flags(pixeldq.shape, guide_window(level1))

    if isinstance(level1, datamodels.TvacModel):
        ramp = _ramp_from_groundtest(level1)
    else:
        ramp = datamodels.RampModel.create_from_model({**level1, "data": None})
    ramp.meta.model_type = "RampModel"
    data = raw.astype(np.float32)
    offset = level1.meta.instrument.get("data_encoding_offset", 0) or 0
    if offset:  # an encoding offset added on board is not signal
        data -= np.float32(offset)
    ramp.data = data
    ramp.pixeldq = pixeldq
    ramp.groupdq = groupdq
    ramp.amp33 = plain_array(level1.amp33).astype(np.uint16, copy=True)
    if is_guide_star:
        ramp["dq"] = mask_dq.astype(np.uint32, copy=True)
    ramp.border_ref_pix_left = data[:, :, :BORDER].copy()
    ramp.border_ref_pix_right = data[:, :, -BORDER:].copy()
    ramp.border_ref_pix_top = data[:, :BORDER, :].copy()
    ramp.border_ref_pix_bottom = data[:, -BORDER:, :].copy()
    ramp.dq_border_ref_pix_left = pixeldq[:, :BORDER].copy()
    ramp.dq_border_ref_pix_right = pixeldq[:, -BORDER:].copy()
    ramp.dq_border_ref_pix_top = pixeldq[:BORDER, :].copy()
    ramp.dq_border_ref_pix_bottom = pixeldq[-BORDER:, :].copy()
    return ramp


def _ramp_from_groundtest(tvac):
    """A RampModel carrying a ground-test file's selection metadata and its test records.

    TvacModel's meta follows its own schema, so the fields the pipeline uses are
    copied one by one; the ground-test records (groundtest, gw_meta, hdf5_meta,
    guidestar) travel along as plain trees for the diagnostics.
    """
    ramp = datamodels.RampModel.create_fake_data(shape=(1, 1, 1))
    source = tvac.meta
    ramp.meta.instrument.detector = str(source.instrument.detector)
    ramp.meta.instrument.optical_element = str(source.instrument.optical_element)
    exposure = ramp.meta.exposure
    exposure.type = science_exposure_type(str(source.exposure.type))
    exposure.start_time = Time(source.exposure.start_time)
    exposure.frame_time = float(source.exposure.frame_time)
    exposure.read_pattern = [list(map(int, reads)) for reads in source.exposure.read_pattern]
    exposure.nresultants = len(exposure.read_pattern)
    exposure.ma_table_name = str(source.exposure.ma_table_name)
    exposure.ma_table_number = int(source.exposure.ma_table_number)
    if "guidestar" in source:
        window = source.guidestar  # its gw_id stays in meta.guidestar: TVAC ids need not fit guide_window_id
        for edge in ("xstart", "xstop", "ystart", "ystop"):
            ramp.meta.guide_star[f"window_{edge}"] = int(window[f"gw_window_{edge}"])
    for record in ("groundtest", "gw_meta", "hdf5_meta", "guidestar"):
        if record in source:
            ramp.meta[record] = _plain_tree(source[record])
    return ramp


def _plain_tree(node):
    """Nested plain dicts and lists: roman_datamodels nodes cannot move between schemas.

    Arrays (e.g. groundtest.frames_temp) become lists and array Quantities
    ``{"value": [...], "unit": "..."}``: as ASDF blocks they would be read lazily by the
    next step, and one that closes its input before writing (refpix) could not copy them.
    """
    if isinstance(node, Mapping):
        return {key: _plain_tree(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_plain_tree(value) for value in node]
    if isinstance(node, Time):
        return Time(node)
    if isinstance(node, str):
        return str(node)  # drops the schema tag of tagged strings
    if isinstance(node, u.Quantity) and node.ndim:
        return {"value": node.value.tolist(), "unit": node.unit.to_string()}
    if hasattr(node, "__array__") and np.ndim(node):  # asdf's lazy NDArrayType too
        return np.asarray(node).tolist()
    return node


def main(argv=None) -> None:
    args, parameters = parse_step_args(STEP, __doc__.split("\n\n")[0], argv)
    level1 = open_level1(args.input)
    mask_path = reference_file("mask", parameters, level1)
    with open_model(mask_path, (datamodels.MaskRefModel,)) as mask:
        mask_dq = np.asarray(mask.dq)
        ramp = to_ramp_model(level1, mask_dq)
    write_product(ramp, args.output, STEP, args, parameters, {"mask": mask_path})


if __name__ == "__main__":
    sys.exit(cli.run(main))
