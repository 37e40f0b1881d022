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
itself, rows ``ystart:ystop`` of those columns, also DO_NOT_USE; ``expand_gw_flagging``
N > 0 grows that DO_NOT_USE rectangle by N pixels on each side (clipped to the array),
which also gets GW_AFFECTED_DATA, as romancal's. A window whose start
lies outside the array (unset metadata is -999999) flags nothing. Where we differ:
romancal 1.1 converts a TvacModel to a ScienceRawModel first and so reads the
placeholder ``guide_star`` values, never the TVAC window (the TVAC tutorial's log,
section "Calibrate the data", shows -999999); we read the TVAC record. TVAC exposure
types become the science schemas'
(WFI_DARK -> WFI_IM_DARK, WFI_GRISM and WFI_PRISM -> WFI_SPECTRAL).

Reference read (romancal's DQInitStep): when the spacecraft subtracted a reference read
from every read and downlinked it (``reference_read``, ``reference_amp33``: 2-D uint16,
present only then), it is added back to every resultant of ``data`` and ``amp33``, and
``meta.instrument.data_encoding_offset`` is removed from both; the counts are then again
the ones the detector read. A ground-test TvacModel's reference read is a record of the
read after the reset, never subtracted, and stays as it is. ``amp33`` stays uint16 (the
RampModel schema): a sum outside 0..65535, which consistent data cannot give, is clipped
with a warning where romancal's uint16 arithmetic wraps around. The consumed Level 1
arrays (``resultantdq``, ``reference_read``, ``reference_amp33``) are not carried into the
ramp.

    python scripts/dq_init.py r..._uncal.asdf r..._dqinit.asdf [--override-mask FILE]
        [--expand-gw-flagging N]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from romanpipe import cli, dqflags
from romanpipe.detector import BORDER
from romanpipe.errors import InputFileError
from romanpipe.exposure_types import science_exposure_type
from romanpipe.products import COMPLETE, LEVEL1_MODELS, check_level1, open_model, plain_array
from romanpipe.steprun import StepRun, run_script

import astropy.units as u
import numpy as np
from astropy.time import Time
from roman_datamodels import datamodels

log = logging.getLogger("dq_init")

STEP = "dq_init"
INPUT_MODELS = LEVEL1_MODELS

# The romancal documentation, section "Data Quality (DQ) Initialization": guide-star data carry
# the MASK flags in "dq" instead of "pixeldq".
GUIDE_STAR_EXPOSURE_TYPES = frozenset(
    {"WFI_WIM_ACQ", "WFI_WIM_TRACK", "WFI_WSM_ACQ1", "WFI_WSM_ACQ2", "WFI_WSM_TRACK"}
)
# Level 1 arrays that dq_init turns into ramp content: the ramp carries the result, not them.
CONSUMED_LEVEL1_ARRAYS = ("resultantdq", "reference_read", "reference_amp33")
UINT16_MAX = np.iinfo(np.uint16).max


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


def guide_window_flags(shape, window, *, expand=0, flags=dqflags.pixel):
    """PIXELDQ bits (uint32, ``shape`` = (nrows, ncols)) of a guide window (xstart, xstop, ystart, ystop).

    Columns xstart:xstop get GW_AFFECTED_DATA in every row; the window grown by ``expand``
    pixels on each side (clipped to the array) gets DO_NOT_USE and GW_AFFECTED_DATA.
    Nothing when ``window`` is None or starts outside the array.
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
    rows = slice(max(ystart - expand, 0), min(ystop + expand, nrows))
    columns = slice(max(xstart - expand, 0), min(xstop + expand, ncols))
    bits[rows, columns] |= affected | np.uint32(flags["DO_NOT_USE"])
    log.info("Flagging rows from: %d to %d as affected by guide window read (array columns; rows %d to %d "
             "of columns %d to %d also DO_NOT_USE, the window grown by %d)", xstart, min(xstop, ncols),
             rows.start, rows.stop, columns.start, columns.stop, expand)
    return bits


def detector_counts(downlinked, reference_read, encoding_offset):
    """float32 counts as the detector read them, from downlinked ones (nresultants, nrows, ncols).

    ``reference_read`` (nrows, ncols), subtracted on board from every read, is added back
    to every resultant (None: none was subtracted); the encoding offset added on board is
    removed. ValueError if the reference read does not fit the resultants.
    """
    counts = np.array(downlinked, dtype=np.float32)  # a copy: the input stays as it is
    if reference_read is not None:
        if reference_read.shape != counts.shape[1:]:
            raise ValueError(f"reference read has shape {reference_read.shape}, the resultants "
                             f"{counts.shape[1:]}")
        counts += reference_read.astype(np.float32)
    if encoding_offset:
        counts -= np.float32(encoding_offset)
    return counts


def amp33_counts(amp33, reference_amp33, encoding_offset):
    """``detector_counts`` of amp33 as the RampModel's uint16, clipped to 0..65535 with a warning."""
    counts = detector_counts(amp33, reference_amp33, encoding_offset)
    outside = np.count_nonzero((counts < 0) | (counts > UINT16_MAX))
    if outside:
        log.warning("%d amp33 samples outside 0..%d after the reference read and encoding offset: clipped",
                    outside, UINT16_MAX)
    return np.clip(counts, 0, UINT16_MAX).astype(np.uint16)


def onboard_reference_read(level1, name):
    """The Level 1 array ``name`` (reference_read or reference_amp33) if a reference read was subtracted.

    None for a ground-test file (its reference read is a record, never subtracted) and where
    the array is absent, null or empty.
    """
    if isinstance(level1, datamodels.TvacModel) or level1.get(name) is None:
        return None
    array = plain_array(level1[name])
    return array if array.size else None


def to_ramp_model(level1, mask_dq, *, expand_gw_flagging=0):
    """A RampModel with the Level 1 metadata, the detector's counts in float32 and initialized DQ.

    ValueError when a Level 1 array does not fit the data.
    """
    raw = plain_array(level1.data)
    exposure_type = science_exposure_type(str(level1.meta.exposure.type))
    resultant_dq = plain_array(level1.resultantdq) if "resultantdq" in level1 else None
    is_guide_star = exposure_type in GUIDE_STAR_EXPOSURE_TYPES

    pixeldq, groupdq = initialize_dq(None if is_guide_star else mask_dq, resultant_dq, raw.shape)
    pixeldq |= guide_window_flags(pixeldq.shape, guide_window(level1), expand=expand_gw_flagging)

    if isinstance(level1, datamodels.TvacModel):
        ramp = _ramp_from_groundtest(level1)
    else:
        fields = {**level1, "data": None}
        for name in CONSUMED_LEVEL1_ARRAYS:
            fields.pop(name, None)
        ramp = datamodels.RampModel.create_from_model(fields)
    ramp.meta.model_type = "RampModel"
    offset = level1.meta.instrument.get("data_encoding_offset", 0) or 0
    reference_read = onboard_reference_read(level1, "reference_read")
    if reference_read is not None:
        log.info("adding back the reference read subtracted on board")
    data = detector_counts(raw, reference_read, offset)
    ramp.data = data
    ramp.pixeldq = pixeldq
    ramp.groupdq = groupdq
    ramp.amp33 = amp33_counts(plain_array(level1.amp33), onboard_reference_read(level1, "reference_amp33"),
                              offset)
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


def run(level1, step: StepRun):
    """The RampModel of ``level1`` (a ScienceRawModel or TvacModel) with the MASK's flags."""
    check_level1(level1, step.input)
    with open_model(step.reference("mask"), (datamodels.MaskRefModel,)) as mask:
        try:
            ramp = to_ramp_model(level1, np.asarray(mask.dq),
                                 expand_gw_flagging=step.parameters["expand_gw_flagging"])
        except ValueError as err:
            raise InputFileError(step.input, str(err)) from None
    return ramp, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
