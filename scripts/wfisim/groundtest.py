"""Ground-test (TVAC) exposures: ``TvacModel`` files like those of the WFI thermal-vacuum campaigns.

The TVAC tutorial (README, References: a look at the TVAC2 Bright Star Saturation test) reads
one illuminated exposure and three darks of SCA 11, each 55 resultants of one read.
This module makes such a set for one simulated detector, reusing the campaign
simulator's parts: the detector truth (``detector``), the ramp generator with
nonlinearity and reference-pixel electronics (``ramps``, ``nonlinearity``,
``refpix_effects``), the Gaussian or GalSim scene (``scene``, ``psf``), the
references (``references``) and the offline CRDS cache (``romanpipe.crds_cache``).

Scenes (``write_tvac_exposure``):

``bright``  a grid of point sources through F146 (a telescope simulator projects them
            in the test), magnitudes evenly spaced from ``star_magnitudes[0]`` (~4: its
            core saturates in the first frame) to ``star_magnitudes[1]`` (~18), row by
            row from the top-left cell; AB magnitude -> e/s with
            ``wfisim.photometry.AB_ZERO_POINT``. No sky (the chamber is dark).
``dark``    no light: bias, dark current (hot pixels included) and noise only;
            ``meta.exposure.type`` WFI_DARK, optical element DARK.

What a TVAC file carries besides the science ramp (``data``, uint16, border included)
and ``amp33``: ``meta.groundtest`` (test names, temperatures, frame temperatures),
``meta.hdf5_meta``/``meta.hdf5_telemetry``/``meta.gw_meta`` (the converter's copies of
the test's HDF5 records, simulated), ``meta.guidestar`` with the guide window's
position, ``gw_window_{x,y}{start,stop}`` in readout pixels, stop exclusive (as
romancal's dq_init slices them), and ``guidewindow``: the window's pixels in every
resultant. Optional (``reset_reads`` > 0, ``reference_read``): ``reset_reads`` /
``amp33_reset_reads`` (reads of the array held in reset) and ``reference_read`` /
``amp33_reference_read`` (the read right after the reset); each is bias plus read
noise. TVAC files keep that reference read in the data (romancal's dq_init adds it
back only for flight files), so the data are not changed by it.

Truth, ``<exposure>_truth.asdf`` beside each ``<exposure>_uncal.asdf`` (plain ASDF;
arrays (nrows, ncols) of the readout, border included):

``scene``, ``exposure``, ``exposure_type``, ``optical_element``, ``frame_time``,
``read_pattern``, ``seed``
    what was run.
``bias`` (DN, float32), ``dark_rate`` (DN/s, float32: dark current / gain),
``gain`` (e/DN), ``read_noise`` (DN per read, per pixel)
    the detector; the same for every exposure of one detector and seed.
``first_saturated_frame`` (int16)
    the first resultant (0-based) whose value reaches the SATURATION reference's
    threshold, -1 if none: what the saturation step must flag. Pixels the reference
    does not check (NaN threshold or NO_SAT_CHECK) are -1.
``first_full_well_frame`` (int16)
    the first resultant holding a read at full well, -1 if none: the physics that
    threshold stands for.
``saturation_threshold`` (DN, float32), ``saturation_unchecked`` (bool)
    the SATURATION reference's data and the pixels it does not check.
``reference_pixels``, ``dead``, ``hot``, ``ad_floor`` (bool)
    the detector's masks (A/D-floor pixels have a negative bias and read 0 DN).
``guide_window``
    ``xstart``, ``xstop``, ``ystart``, ``ystop`` (readout pixels, stops exclusive).
``catalog`` (bright)
    ``x``, ``y`` (readout pixels), ``magnitude`` (AB), ``flux_e_per_s`` of every source;
    ``rate_e_per_s`` the photo-electron rate image (flat applied).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from romanpipe import crds_cache
from romanpipe.dqflags import pixel
from romanpipe.products import write_atomic

import astropy.units as u
import numpy as np
import yaml
from astropy.time import Time, TimeDelta
from roman_datamodels import datamodels

from .campaign import EXPOSURE_GAP_S, exposure_effects
from .detector import BORDER, DetectorModel, DetectorParameters, build_detector, detector_key
from .flat import true_flat
from .level1 import ExposureId
from .matables import FULL_FRAME_TIME, MaTable, even_ma_table, read_pattern_from_counts
from .nonlinearity import NonlinearResponse, nonlinear_response
from .photometry import AB_ZERO_POINT
from .psf import PSF_MODELS, render_stars
from .ramps import Ramp, simulate_ramp
from .references import make_reference, write_references
from .refpix_effects import fits_readout_layout
from .scene import Catalog
from .settings import SettingsFile
from .truth import write_tree

__all__ = ["GroundTestConfig", "simulate_groundtest", "truth_path", "write_tvac_exposure"]

log = logging.getLogger(__name__)

SCENES = ("bright", "dark")
DARK_EXPOSURE_TYPE = "WFI_DARK"  # the TVAC schema's name; the science schemas call it WFI_IM_DARK
BRIGHT_EXPOSURE_TYPE = "WFI_IMAGE"
# The references of the tutorial's four steps (the pool selects none for steps after the target).
PIPELINE_REFTYPES = ("mask", "saturation", "refpix", "linearity")
_SCENE_STREAM = {"bright": 11, "dark": 12}
_RESET_STREAM = 13  # reset and reference reads, apart from the ramp's streams
DETECTOR_TEMPERATURE_K = 95.0
FRAME_TEMPERATURE_SCATTER_K = 0.002
PIXEL_SIZE_CM = 1.0e-3  # 10 micron H4RG pixels
# The workflow settings of the tutorial's partial pipeline; out/workflow.yaml adds the set's folders.
PARTIAL_PIPELINE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "groundtest.yaml"


@dataclass(frozen=True)
class GroundTestConfig(SettingsFile):
    """What to simulate; the YAML keys are these field names."""

    KIND = "ground-test"

    detector: str = "WFI01"
    size: int = 4096  # rows = columns of the readout, reference border included
    nresultants: int = 55  # each one read, as the TVAC darks and bright-star exposures
    seed: int = 1
    n_darks: int = 3
    frame_time: float = FULL_FRAME_TIME  # s
    bias_level: float = 10_000.0  # DN, mean over pixels
    bias_spread: float = 600.0  # DN, rms over pixels
    dark_rate: float = 0.0025  # DN/s, mean over normal pixels (lognormal)
    dark_rate_spread: float = 0.0015  # DN/s, rms over normal pixels
    read_noise: float = 6.0  # DN per read (pixels scatter 5 % about it)
    gain: float = 2.0  # e/DN (pixels scatter 5 % about it)
    optical_element: str = "F146"
    star_grid: tuple[int, int] = (3, 3)  # rows, columns of sources
    star_magnitudes: tuple[float, float] = (4.0, 18.0)  # brightest (first cell), faintest (last)
    psf: str = "gaussian"
    # e/s on every pixel of the bright exposure (the chamber's background light): the tutorial
    # compares each frame's slope with the pixel's mean slope, which needs signal everywhere.
    illumination: float = 50.0
    # [xstart, ystart, xsize, ysize] in readout pixels; None: a square window (16 pixels at
    # full size, size / 16 below, at least 4) a third of the way in, between the grid's sources.
    guide_window: tuple[int, int, int, int] | None = None
    reset_reads: int = 0  # reset reads written per exposure (0: none)
    reference_read: bool = False  # also write the reference read
    start_time: str = "2024-05-06T20:45:23"  # UTC of the bright exposure; the darks follow
    program: int = 1
    test_name: str = "WFISAT"
    test_phase: str = "TVAC2"
    test_environment: str = "TOHOTQUAL"

    def __post_init__(self) -> None:
        # YAML gives lists; tuples keep the config hashable (the detector is cached per config).
        for name in ("star_grid", "star_magnitudes", "guide_window"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.optical_element.upper() not in AB_ZERO_POINT:
            raise ValueError(f"unknown imaging filter {self.optical_element!r}; "
                             f"known: {', '.join(AB_ZERO_POINT)}")
        if self.psf not in PSF_MODELS:
            raise ValueError(f"unknown psf {self.psf!r}; known: {', '.join(PSF_MODELS)}")
        if len(self.star_grid) != 2 or min(self.star_grid) < 1:
            raise ValueError("star_grid needs [rows, columns], each at least 1")
        if len(self.star_magnitudes) != 2:
            raise ValueError("star_magnitudes needs [brightest, faintest]")
        if self.nresultants < 2 or self.n_darks < 0 or self.reset_reads < 0:
            raise ValueError("nresultants >= 2, n_darks >= 0 and reset_reads >= 0 are required")
        if self.dark_rate <= 0 or self.dark_rate_spread < 0:
            raise ValueError("dark_rate must be positive and dark_rate_spread not negative")
        xstart, ystart, xstop, ystop = self.window()
        if not (0 <= xstart < xstop <= self.size and 0 <= ystart < ystop <= self.size):
            raise ValueError(f"guide window {self.guide_window} does not fit a {self.size}-pixel readout")

    def table(self) -> MaTable:
        return even_ma_table(self.nresultants, self.frame_time)

    def window(self) -> tuple[int, int, int, int]:
        """The guide window as (xstart, ystart, xstop, ystop), stops exclusive."""
        if self.guide_window is not None:
            xstart, ystart, xsize, ysize = (int(v) for v in self.guide_window)
        else:
            xsize = ysize = 16 if self.size >= 4096 else max(4, self.size // 16)
            inner = self.size - 2 * BORDER
            xstart = ystart = BORDER + inner // 3 - xsize // 2
        return xstart, ystart, xstart + xsize, ystart + ysize

    def detector_parameters(self) -> DetectorParameters:
        """The campaign detector's distributions with this config's levels."""
        # Mean m and rms s of a lognormal: median m / sqrt(1 + (s/m)^2), log-sigma sqrt(log(1 + (s/m)^2)).
        spread = 1.0 + (self.dark_rate_spread / self.dark_rate) ** 2
        return DetectorParameters(
            bias_dn=self.bias_level, bias_scatter_dn=self.bias_spread,
            gain_e_per_dn=self.gain, gain_limits=(0.8 * self.gain, 1.2 * self.gain),
            read_noise_dn=self.read_noise, read_noise_scatter_dn=0.05 * self.read_noise,
            read_noise_limits=(0.8 * self.read_noise, 1.2 * self.read_noise),
            dark_current_e_per_s=self.dark_rate * self.gain / math.sqrt(spread),
            dark_current_log_scatter=math.sqrt(math.log(spread)),
        )

    def exposure_id(self, scene: str, index: int) -> ExposureId:
        """The bright exposure is observation 1; the darks are the exposures of observation 2."""
        if scene == "bright":
            return ExposureId(program=self.program, observation=1, exposure=index + 1)
        return ExposureId(program=self.program, observation=2, exposure=index + 1)

    def start_of(self, scene: str, index: int) -> Time:
        """The bright exposures first, then the darks, one after the other."""
        order = index if scene == "bright" else 1 + index
        start = Time(self.start_time, format="isot", scale="utc")
        return start + TimeDelta(order * (self.table().exposure_time + EXPOSURE_GAP_S), format="sec")

    def useafter(self) -> Time:
        """References valid from the day before the test, so CRDS picks them for every exposure."""
        day_before = Time(self.start_time, format="isot", scale="utc") - TimeDelta(1, format="jd")
        return Time(day_before.strftime("%Y-%m-%dT00:00:00"), format="isot", scale="utc")


@dataclass(frozen=True, eq=False)
class _Detector:
    """One detector of a config with what every exposure of it needs."""

    model: DetectorModel
    response: NonlinearResponse
    saturation_threshold: np.ndarray  # DN, the SATURATION reference's data
    saturation_unchecked: np.ndarray  # bool: NaN threshold or NO_SAT_CHECK
    with_refpix: bool  # the array fits the 32-output layout: reference-pixel effects and REFPIX


@functools.lru_cache(maxsize=1)
def _detector(config: GroundTestConfig) -> _Detector:
    model = build_detector(config.detector, (config.size, config.size), config.seed,
                           config.detector_parameters())
    saturation = make_reference("saturation", model, useafter=config.useafter())
    threshold = np.asarray(saturation.data, dtype=np.float32)
    unchecked = np.isnan(threshold) | ((np.asarray(saturation.dq) & pixel.NO_SAT_CHECK) != 0)
    return _Detector(model, nonlinear_response(model), threshold, unchecked,
                     fits_readout_layout(model.shape))


def truth_path(uncal_path: str | Path) -> Path:
    """``<exposure>_truth.asdf`` beside ``<exposure>_uncal.asdf``."""
    uncal_path = Path(uncal_path)
    stem = uncal_path.name.removesuffix(".asdf").removesuffix("_uncal")
    return uncal_path.with_name(f"{stem}_truth.asdf")


def bright_catalog(config: GroundTestConfig) -> tuple[Catalog, np.ndarray]:
    """The sources at the centres of a grid of cells over the light-sensitive area, and their magnitudes."""
    nrows, ncols = config.star_grid
    inner = config.size - 2 * BORDER
    y, x = np.meshgrid(BORDER + (np.arange(nrows) + 0.5) * inner / nrows,
                       BORDER + (np.arange(ncols) + 0.5) * inner / ncols, indexing="ij")
    magnitudes = np.linspace(*config.star_magnitudes, nrows * ncols)
    flux = 10.0 ** (-0.4 * (magnitudes - AB_ZERO_POINT[config.optical_element.upper()]))
    return Catalog(x.ravel(), y.ravel(), flux), magnitudes


def first_flagged_resultant(resultants: np.ndarray, threshold: np.ndarray,
                            unchecked: np.ndarray) -> np.ndarray:
    """First resultant (int16) reaching ``threshold``, -1 where none does or the pixel is unchecked."""
    first = np.full(threshold.shape, -1, dtype=np.int16)
    limit = np.where(unchecked, np.inf, threshold)
    for index, plane in enumerate(resultants):
        first[(plane >= limit) & (first < 0)] = index
    return first


def write_tvac_exposure(path: Path, config: GroundTestConfig, scene: str, index: int = 0, *,
                        workers: int | None = None) -> dict:
    """Simulate one ``scene`` exposure; write its TvacModel at ``path`` and its truth beside it.

    ``index`` numbers the exposures of a scene (seed stream, exposure number, start time);
    ``workers``: threads simulating row chunks (the output does not depend on it).
    Returns the truth tree (see the module docstring).
    """
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; known: {', '.join(SCENES)}")
    path = Path(path)
    detector = _detector(config)
    model = detector.model
    table = config.table()
    seed = [config.seed, detector_key(model.name), _SCENE_STREAM[scene], index]
    effects = exposure_effects(model, detector.response, seed, detector.with_refpix)

    truth: dict = {}
    if scene == "bright":
        catalog, magnitudes = bright_catalog(config)
        element = config.optical_element.upper()
        rate = render_stars(model.shape, catalog, config.illumination, element, detector=model.name,
                            psf=config.psf)
        rate *= true_flat(model, element)
        truth["catalog"] = {"x": catalog.x, "y": catalog.y, "magnitude": magnitudes,
                            "flux_e_per_s": catalog.flux}
        truth["rate_e_per_s"] = rate.astype(np.float32)
        exposure_type = BRIGHT_EXPOSURE_TYPE
    else:
        rate = np.zeros(model.shape)
        element = "DARK"
        exposure_type = DARK_EXPOSURE_TYPE

    ramp = simulate_ramp(model.electron_rate(rate), model.science_readout(), table, seed, effects=effects,
                         workers=workers)
    amp33 = simulate_ramp(np.zeros(model.amp33_bias.shape), model.amp33_readout(), table, seed,
                          effects=effects, workers=workers)
    start = config.start_of(scene, index)
    exposure_id = config.exposure_id(scene, index)
    name = exposure_id.name(model.name)
    tvac = make_tvac(config, ramp, amp33, name=name, visit_id=exposure_id.visit_id, scene=scene,
                     exposure_type=exposure_type, optical_element=element, start_time=start)
    _add_reset_and_reference_reads(tvac, config, model, seed)
    write_atomic(tvac, path)

    xstart, ystart, xstop, ystop = config.window()
    truth.update({
        "scene": scene,
        "exposure": name,
        "exposure_type": exposure_type,
        "optical_element": element,
        "frame_time": table.frame_time,
        "read_pattern": table.read_pattern_lists(),
        "seed": [int(value) for value in seed],
        "bias": model.bias.astype(np.float32),
        "dark_rate": (model.dark_current / model.gain).astype(np.float32),
        "gain": model.gain.astype(np.float32),
        "read_noise": model.read_noise.astype(np.float32),
        "first_saturated_frame": first_flagged_resultant(ramp.resultants, detector.saturation_threshold,
                                                         detector.saturation_unchecked),
        "first_full_well_frame": ramp.first_saturated_resultant.astype(np.int16),
        "saturation_threshold": detector.saturation_threshold,
        "saturation_unchecked": detector.saturation_unchecked,
        "reference_pixels": model.reference_pixels,
        "dead": model.dead,
        "hot": model.hot,
        "ad_floor": model.ad_floor,
        "guide_window": {"xstart": xstart, "xstop": xstop, "ystart": ystart, "ystop": ystop},
    })
    write_tree(truth, truth_path(path))
    return truth


def make_tvac(config: GroundTestConfig, ramp: Ramp, amp33: Ramp, *, name: str, visit_id: str, scene: str,
              exposure_type: str, optical_element: str, start_time: Time):
    """A TvacModel of one exposure with the ground-test metadata of a TVAC file."""
    table = config.table()
    nresultants = table.nresultants
    xstart, ystart, xstop, ystop = config.window()
    end_time = start_time + TimeDelta(table.exposure_time, format="sec")
    model = datamodels.TvacModel.create_fake_data(shape=(nresultants, 1, 1))
    meta = model.meta
    # TVAC metadata strings are tagged scalars: a plain str does not validate.
    meta.filename = type(meta.filename)(f"{name}_uncal.asdf")
    meta.instrument.update({"name": "WFI", "detector": config.detector.upper(),
                            "optical_element": optical_element})
    meta.exposure.update({
        "type": exposure_type, "start_time": start_time, "ngroups": nresultants, "nframes": 1,
        "data_problem": False, "frame_divisor": 1, "groupgap": 0, "frame_time": table.frame_time,
        "group_time": table.frame_time, "exposure_time": table.exposure_time,
        "ma_table_name": table.name, "ma_table_number": table.number,
        "read_pattern": table.read_pattern_lists(),
    })
    meta.guidestar.update({
        "gw_id": f"{visit_id}1", "gw_fgs_mode": "WIM-TRACK",  # visit and guide star acquisition 1
        "data_start": float(start_time.mjd), "data_end": float(end_time.mjd),
        "gw_window_xstart": xstart, "gw_window_ystart": ystart,
        "gw_window_xstop": xstop, "gw_window_ystop": ystop,
        "gw_window_xsize": xstop - xstart, "gw_window_ysize": ystop - ystart,
    })
    # The frames' temperatures wander by a few mK around the detector's.
    rng = np.random.default_rng([config.seed, _RESET_STREAM, nresultants])
    frames_temp = DETECTOR_TEMPERATURE_K + FRAME_TEMPERATURE_SCATTER_K * rng.standard_normal(nresultants)
    sca = config.detector.upper().replace("WFI", "SCA")
    meta.groundtest.update({
        "test_name": config.test_name, "test_phase": config.test_phase,
        "test_environment": config.test_environment, "test_script": "wfisim groundtest",
        "product_date": start_time, "product_version": "wfisim", "conversion_date": end_time,
        "conversion_version": "wfisim", "filename_pnt5": f"{name}.h5", "filepath_level_pnt5": "simulated",
        "filename_l1a": f"{name}_l1a.h5", "detector_id": sca, "detector_temp": DETECTOR_TEMPERATURE_K,
        "frames_temp": frames_temp,
        "ota_temp": 260.0, "rcs_on": False,
        "readout_col_num": config.size + amp33.resultants.shape[2],
        "detector_pixel_size": u.Quantity(np.array([PIXEL_SIZE_CM, PIXEL_SIZE_CM]), u.cm),
        "sensor_error": np.zeros(nresultants),
        "activity_number": 22 if scene == "bright" else 40,  # the tutorial's activities
        "wfi_opt_targettype": "POINT SOURCE" if scene == "bright" else "DARK",
        "analysis_tag": "BrightStar" if scene == "bright" else "FinalDark",
    })
    meta.hdf5_meta = {"simulated": True, "scene": scene, "frame_time": table.frame_time,
                      "nframes": nresultants, "detector": sca}
    meta.hdf5_telemetry = "simulated: no telemetry"
    meta.gw_meta = {"gw_window_xstart": xstart, "gw_window_ystart": ystart,
                    "gw_window_xsize": xstop - xstart, "gw_window_ysize": ystop - ystart}
    model.data = _dn(ramp.resultants)
    model.amp33 = _dn(amp33.resultants)
    model.guidewindow = _dn(np.ascontiguousarray(ramp.resultants[:, ystart:ystop, xstart:xstop]))
    return model


def _add_reset_and_reference_reads(tvac, config: GroundTestConfig, detector: DetectorModel, seed) -> None:
    """Reset reads and the reference read: the array read with no charge (bias and read noise)."""
    count = config.reset_reads + (1 if config.reference_read else 0)
    if not count:
        return
    table = MaTable(f"RESET_{count}", 0, read_pattern_from_counts([1] * count), config.frame_time)
    stream = [*seed, _RESET_STREAM]
    science = simulate_ramp(np.zeros(detector.shape), detector.science_readout(), table, stream).resultants
    amp33 = simulate_ramp(np.zeros(detector.amp33_bias.shape), detector.amp33_readout(), table,
                          stream).resultants
    if config.reset_reads:
        tvac.reset_reads = _dn(science[:config.reset_reads])
        tvac.amp33_reset_reads = _dn(amp33[:config.reset_reads])
    if config.reference_read:
        tvac.reference_read = _dn(science[-1:])
        tvac.amp33_reference_read = _dn(amp33[-1:])


def _dn(counts: np.ndarray) -> u.Quantity:
    """uint16 counts as the DN Quantity TvacModel stores (no copy)."""
    return u.Quantity(counts, u.DN, dtype=np.uint16, copy=False)


def simulate_groundtest(config: GroundTestConfig, out: Path, *, workers: int | None = None) -> None:
    """One bright exposure and ``n_darks`` darks, their references, a CRDS cache and a workflow config.

    Writes ``out/uncal/`` (exposures and their truth), ``out/references/``,
    ``out/crds_cache/`` and ``out/workflow.yaml`` (``config/groundtest.yaml``'s partial
    pipeline, with paths relative to ``out``: run with ``--directory out``).
    """
    out = Path(out)
    model = _detector(config).model
    cache_dir = out / "crds_cache"
    taken = [crds_cache.references_dir(cache_dir)]
    reftypes = [r for r in PIPELINE_REFTYPES if r != "refpix" or fits_readout_layout(model.shape)]
    references = write_references(model, out / "references", useafter=config.useafter(), reftypes=reftypes,
                                  also_taken=taken)

    exposures = [("bright", 0)] + [("dark", index) for index in range(config.n_darks)]
    for scene, index in exposures:
        name = config.exposure_id(scene, index).name(model.name)
        write_tvac_exposure(out / "uncal" / f"{name}_uncal.asdf", config, scene, index, workers=workers)
        log.info("simulated %s exposure %s", scene, name)

    context = crds_cache.deliver(cache_dir, references, description="wfisim ground-test set")
    settings = yaml.safe_load(PARTIAL_PIPELINE_CONFIG.read_text())
    settings.update({"inputs": {"uncal_dir": "uncal"}, "crds": {"path": "crds_cache"}})
    if "refpix" not in reftypes:  # arrays too small for the 32-output layout have no REFPIX
        settings["refpix"] = {**settings.get("refpix", {}), "skip": True}
    (out / "workflow.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    log.info("ground test: %d exposures, %d references, CRDS context %s", len(exposures), len(references),
             context)
