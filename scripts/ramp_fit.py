"""ramp_fit: fit a count rate (DN/s) to every pixel's ramp and trim the reference border.

Seed, "Ramp Fitting": ``algorithm=ols_cas22`` (default) fits uneven ramps after
Casertano et al. (2022) with the integrated jump detection (``use_ramp_jump_detection``,
thresholds ``threshold_intercept`` / ``threshold_constant``; the documented queue and
threshold, each candidate's significance from exact variances); ``algorithm=ols`` fits even
ramps after Fixsen et al. (2000) and can write the per-segment ``_fitopt`` product
(``save_opt``, ``opt_name``); ``algorithm=likely`` is romancal 1.1's default, the
maximum-likelihood fit of the resultant differences after Brandt (2024) with its iterative
jump rejection (``rejection_threshold``) and, with ``expand_large_events``, romancal 1.1's
snowball flagging (``min_jump_area``, ``min_sat_area``, ``expand_factor``,
``sat_required_snowball``, ``min_sat_radius_extend``, ``sat_expand``, ``edge_size``;
``rampfit_kernels.snowballs``). The formulas are in ``rampfit_kernels.cas22``,
``rampfit_kernels.ols`` and ``rampfit_kernels.likely``. GAIN (e/DN) turns DN into
electrons for the noise model, READNOISE is the noise of one read (DN), and the DARK
reference's dark_slope (DN/s) is
added back to the dark-subtracted ramp for its Poisson noise and removed from the slope
(only when ``cal_step.dark`` says the ramp's dark was subtracted: in the romancal-1.1
chain the ramp keeps its dark, and dark_current takes it off the rate afterwards).

The product is an ImageModel of the 4088 x 4088 science pixels (border_ref_pix_*, their
DQ and amp33 carried over): data = slope, VAR_POISSON, VAR_RNOISE (left out with
``include_var_rnoise`` false), ERR = sqrt(VAR_POISSON + VAR_RNOISE), DQ = PIXELDQ | every
GROUPDQ flag but DO_NOT_USE | JUMP_DET for jumps found | DO_NOT_USE (and NaN data and
errors) where no slope could be measured. chisq is the likely fit's chi^2, zero for the
others (they compute none, as in romancal); dumo is the read-noise-weighted slope
of all resultants minus the fitted one (romancal's definition).

    python scripts/ramp_fit.py r..._darkcurrent.asdf r..._rampfit.asdf \\
        --override-gain G --override-readnoise R --override-dark D [--algorithm likely]
"""

from __future__ import annotations

import copy
import logging
from contextlib import ExitStack
from pathlib import Path

from romanpipe import cli, dqflags
from romanpipe.cores import worker_count
from romanpipe.detector import BORDER, science_pixels
from romanpipe.errors import InputFileError, NoScienceDataError
from romanpipe.naming import product_name
from romanpipe.products import COMPLETE, as_float16, open_model, plain_array, write_atomic
from romanpipe.steprun import StepRun, run_script

import numpy as np
from asdf.exceptions import ValidationError
from roman_datamodels import datamodels

from rampfit_kernels.cas22 import fit_ramps_cas22
from rampfit_kernels.likely import fit_ramps_likely
from rampfit_kernels.ols import SegmentFits, fit_ramps_ols
from rampfit_kernels.pixelwise import RampFit
from rampfit_kernels.snowballs import SnowballParameters

log = logging.getLogger("ramp_fit")

STEP = "ramp_fit"
INPUT_MODELS = (datamodels.RampModel,)
REFERENCE_MODELS = {
    "gain": datamodels.GainRefModel,
    "readnoise": datamodels.ReadnoiseRefModel,
    "dark": datamodels.DarkRefModel,
}
CARRIED_ARRAYS = ("amp33", "border_ref_pix_left", "border_ref_pix_right", "border_ref_pix_top",
                  "border_ref_pix_bottom", "dq_border_ref_pix_left", "dq_border_ref_pix_right",
                  "dq_border_ref_pix_top", "dq_border_ref_pix_bottom")
PHOTOMETRY_KEYS = ("conversion_megajanskys", "conversion_megajanskys_uncertainty", "pixel_area")


def image_model(ramp, fit: RampFit, *, include_var_rnoise: bool = True):
    """The rate ImageModel: the ramp's metadata, the fit's arrays, the ramp's reference pixels.

    Without ``include_var_rnoise`` VAR_RNOISE is left out, as romancal does by default
    (ERR and VAR_POISSON still hold it: VAR_RNOISE = ERR^2 - VAR_POISSON).
    """
    image = datamodels.ImageModel.create_from_model({"meta": copy.deepcopy(ramp["meta"])})
    image.meta.model_type = "ImageModel"
    image.meta.product_type = "l2"
    # Filled by photom and assign_wcs; required to exist from here on.
    image.meta.photometry = dict.fromkeys(PHOTOMETRY_KEYS)
    image.meta.wcs = None
    image.data = fit.slope
    image.dq = fit.dq
    image.err = as_float16(fit.err)
    image.var_poisson = as_float16(fit.var_poisson)
    if include_var_rnoise:
        image.var_rnoise = as_float16(fit.var_rnoise)
    # Only the likely fit computes a chi^2; romancal writes zeros for the others.
    image.chisq = np.zeros(fit.slope.shape, dtype=np.float16) if fit.chisq is None else as_float16(fit.chisq)
    image.dumo = as_float16(fit.uniform_minus_optimal)
    for name in CARRIED_ARRAYS:
        image[name] = plain_array(ramp[name]).copy()
    return image


def fitopt_model(ramp, segments: SegmentFits):
    """The ``_fitopt`` RampFitOutputModel of the per-segment fits.

    roman_datamodels 1.1 still describes this product with an older metadata schema whose
    enumerations reject placeholders current files carry (e.g. ``?`` for an unknown
    ephemeris type): such metadata blocks keep that schema's defaults, every other block
    is copied from the ramp.
    """
    probe = datamodels.RampFitOutputModel.create_fake_data(shape=(1, 1, 1))
    meta = copy.deepcopy(probe["meta"])
    for key in ramp.meta:
        probe.meta = {**meta, key: copy.deepcopy(ramp["meta"][key])}
        try:
            probe.validate()
        except ValidationError:
            log.debug("fitopt: metadata block %s does not fit the RampFitOutputModel schema", key)
            continue
        meta[key] = probe.meta[key]
    model = datamodels.RampFitOutputModel.create_from_model({"meta": meta})
    model.meta.model_type = "RampFitOutputModel"
    for name in ("slope", "sigslope", "yint", "sigyint", "weights", "var_poisson", "var_rnoise",
                 "pedestal", "crmag"):
        model[name] = getattr(segments, name)
    return model


def fitopt_path(output: Path, opt_name: str | None) -> Path:
    """``opt_name`` (beside the output when it has no folder), else ``<base>_fitopt.asdf``."""
    if opt_name is None:
        return product_name(output, "fitopt")
    path = Path(opt_name)
    return path if path.parent != Path(".") else output.parent / path


def run(ramp, step: StepRun):
    """The count-rate ImageModel of ``ramp`` (a RampModel); ``save_opt`` also writes the ``_fitopt``
    product beside ``step.output``."""
    parameters = step.parameters
    with ExitStack() as open_files:
        paths = {reftype: step.reference(reftype) for reftype in REFERENCE_MODELS}
        references = {reftype: open_files.enter_context(open_model(paths[reftype], (model_type,)))
                      for reftype, model_type in REFERENCE_MODELS.items()}
        fit, segments = fit_ramp_model(ramp, references, paths, parameters, step.input)
    if segments is not None:
        write_atomic(fitopt_model(ramp, segments), fitopt_path(step.output, parameters["opt_name"]))
    return image_model(ramp, fit, include_var_rnoise=parameters["include_var_rnoise"]), COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


def snowball_parameters(parameters) -> SnowballParameters | None:
    """The snowball flagging of the step's parameters, None when ``expand_large_events`` is off.

    ``edge_size`` counts from the detector's edge (romancal fits the whole frame); the fit
    sees the science pixels, BORDER pixels inside it.
    """
    if not parameters["expand_large_events"]:
        return None
    return SnowballParameters(
        min_jump_area=parameters["min_jump_area"], min_sat_area=parameters["min_sat_area"],
        expand_factor=parameters["expand_factor"], sat_required_snowball=parameters["sat_required_snowball"],
        min_sat_radius_extend=parameters["min_sat_radius_extend"], sat_expand=parameters["sat_expand"],
        edge_size=parameters["edge_size"] - BORDER)


def fit_ramp_model(ramp, references, paths, parameters, input_path) -> tuple[RampFit, SegmentFits | None]:
    """Run the chosen algorithm on the science pixels of an open ramp with open references."""
    data = plain_array(ramp.data)
    if data.ndim != 3 or min(data.shape[1:]) <= 2 * BORDER:
        raise NoScienceDataError(f"{input_path}: data of shape {data.shape} has no pixels inside "
                                 f"the {BORDER}-pixel reference border")
    planes = {}
    for reftype, reference in references.items():
        plane = plain_array(reference.dark_slope if reftype == "dark" else reference.data)
        if plane.shape != data.shape[1:]:
            raise InputFileError(paths[reftype], f"{reftype.upper()} has shape {plane.shape}, "
                                                 f"the ramp {data.shape[1:]}")
        planes[reftype] = science_pixels(plane)

    exposure = ramp.meta.exposure
    # The dark is added back (for its Poisson noise) and taken off the slope only if the ramp's
    # dark was subtracted; in the romancal-1.1 chain dark_current comes after, on the rate.
    dark_subtracted = ramp.meta.get("cal_step", {}).get("dark") == COMPLETE
    if not dark_subtracted:
        log.info("the ramp's dark is not subtracted (cal_step.dark): fitted with its dark in it")
    algorithm = parameters["algorithm"]
    if algorithm != "ols" and (parameters["save_opt"] or parameters["opt_name"]):
        log.warning("save_opt and opt_name apply to algorithm ols only: no _fitopt product")
    if algorithm != "likely" and parameters["expand_large_events"]:
        log.warning("expand_large_events applies to algorithm likely only: no snowball flagging")
    if algorithm == "ols" and parameters["use_ramp_jump_detection"]:
        # The parameter's default is True, so this is the normal case for ols: no warning.
        log.info("use_ramp_jump_detection applies to ols_cas22 and likely; ols splits ramps at "
                 "the JUMP_DET flags of the jump step")
    inputs = (science_pixels(data), science_pixels(plain_array(ramp.groupdq)),
              science_pixels(plain_array(ramp.pixeldq)), planes["gain"], planes["readnoise"],
              planes["dark"] if dark_subtracted else None, [list(reads) for reads in exposure.read_pattern],
              float(exposure.frame_time))
    common = dict(flags=dqflags.pixel, workers=worker_count(parameters["maximum_cores"]))
    segments = None
    try:
        if algorithm == "ols_cas22":
            fit = fit_ramps_cas22(*inputs, use_jump=parameters["use_ramp_jump_detection"],
                                  threshold_intercept=parameters["threshold_intercept"],
                                  threshold_constant=parameters["threshold_constant"], **common)
        elif algorithm == "likely":
            fit = fit_ramps_likely(*inputs, use_jump=parameters["use_ramp_jump_detection"],
                                   rejection_threshold=parameters["rejection_threshold"],
                                   snowballs=snowball_parameters(parameters), **common)
        else:
            fit, segments = fit_ramps_ols(*inputs, save_opt=parameters["save_opt"], **common)
    except ValueError as err:
        raise InputFileError(input_path, str(err)) from None
    log.info("%s: %d pixels fitted, %d without a slope, %d with a jump", algorithm,
             int(np.count_nonzero(np.isfinite(fit.slope))), int(np.count_nonzero(np.isnan(fit.slope))),
             int(np.count_nonzero(fit.dq & dqflags.pixel.JUMP_DET)))
    return fit, segments


if __name__ == "__main__":
    cli.run_and_exit(main)
