"""Parity with romancal 1.1, step by step and end to end, on the same inputs and reference files.

Our simulator writes four dithered exposures (``--size``, ``--ma-table``) with their
references and CRDS cache; our workflow runs them to the mosaic through Snakemake.
Then each romancal step is fed OUR intermediate input of that step, with
``override_<reftype>`` naming the reference our run used (from our pool table), and
its output is compared with ours: pixels compared, median and 99.9th percentile of
|ours − romancal| in units of the pixel error (read noise for ramps, ERR for images),
and the fraction of pixels whose DQ words agree. Our ``likely`` ramp fit against
romancal's (its default) on our ``_darkcurrent``. End to end: romancal's
ExposurePipeline (``ols_cas22``) on the Level 1 file against our ``_cal``, and its
flux → skymatch → outlier_detection → resample (MosaicPipeline) on our ``_cal``
files against our ``_i2d``, onto our grid. With ``--romanisim`` the end-to-end
comparison and the ``likely`` row are repeated on a Level 1 file from romanisim (an
independent simulator; offline: no CRDS, galsim's Roman PSF, a star catalog we give it;
full size only)::

    python benchmarks/parity.py --size 4096 --out bench/parity --romanisim
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))

import fidelity  # noqa: E402
import peer  # noqa: E402
from measure import (  # noqa: E402
    clean_environment,
    documented_outlier_settings,
    machine_description,
    markdown_table,
    parity_stats,
    simulate_campaign,
    snakemake_command,
)

HEADERS = ["step", "input (ours)", "pixels compared", "median \\|Δ\\|/σ", "99.9 % \\|Δ\\|/σ", "DQ agreement",
           "why we differ"]

# Where we differ from romancal 1.1 on purpose (README, "Where we differ from romancal 1.1 on purpose").
REASONS = {
    "dq_init": "we flag the 4-pixel border REFERENCE_PIXEL in PIXELDQ",
    "saturation": "documented rule: threshold × ⟨t⟩/max(t) on multi-read resultants (stcal: plain threshold)",
    "refpix": "missing samples by position, not by value 0.0; romancal's options shift by one",
    "linearity": "documented: polynomial of each resultant; romancal 1.1 goes read by read through an "
                 "INVERSELINEARITY (identity here): differs on multi-read resultants",
    "dark_current": "documented: dark subtracted from the ramp before the fit; romancal 1.1: from the slope "
                    "after it (romancal ramp_fit + dark_current on our _linearity)",
    "ramp_fit": "weighting power from the segment's fitted signal (not endpoints); exact jump statistic; "
                "dark rate added back for Poisson noise; NaN where romancal writes 0",
    "ramp_fit likely": "dark rate added back for the Poisson noise; the search's rate guess from the usable "
                       "differences (stcal: all, so false jumps on saturating ramps); NaN and DO_NOT_USE "
                       "without a slope",
    "assign_wcs": "Δ in pixels between the two WCSs' sky positions on a grid (σ = 1 pixel)",
    "flat_field": "no flat variance where the flat is NaN or 0",
    "photom": "conversion keywords, relative difference (σ = |romancal|)",
    "flux": "",
    "skymatch": "sky levels, σ = each image's median ERR; ours fills overlaps from the exact sky polygon",
    "outlier_detection": "quintic blotting (romancal linear); DQ = OUTLIER flags",
    "resample": "onto our grid, exact pixel map; both at ivm-sky (our default ivm-smed is ours alone)",
    "uncal → cal": "all of the above; romancal's source catalog and tweakreg skipped (need Gaia online)",
    "cal → i2d": "romancal MosaicPipeline onto our grid",
}


def dq_flag(name: str) -> int:
    from romanpipe import dqflags

    return int(dqflags.pixel[name])


def read_noise(pool_row, shape) -> np.ndarray:
    """The READNOISE reference, cut to ``shape``'s last two axes (the ramp's error unit, DN)."""
    import roman_datamodels as rdm

    with rdm.open(pool_row["ref_readnoise"]) as reference:
        noise = np.asarray(reference.data, np.float64)
    if noise.shape != tuple(shape[-2:]):
        border = (noise.shape[-1] - shape[-1]) // 2
        noise = noise[border:-border, border:-border]
    return noise


def open_arrays(path, *names):
    import roman_datamodels as rdm

    with rdm.open(path) as model:
        return [np.array(model[name]) for name in names]


def compare_ramps(ours_path, theirs, noise, dq_name):
    ours_data, ours_dq = open_arrays(ours_path, "data", dq_name)
    return parity_stats(ours_data, np.asarray(theirs.data), noise, ours_dq=ours_dq,
                        theirs_dq=np.asarray(theirs[dq_name]))


def compare_images(ours_path, theirs):
    ours_data, ours_err, ours_dq = open_arrays(ours_path, "data", "err", "dq")
    do_not_use = dq_flag("DO_NOT_USE")
    usable = ((ours_dq & do_not_use) == 0) & ((np.asarray(theirs.dq) & do_not_use) == 0)
    return parity_stats(ours_data, np.asarray(theirs.data), ours_err, ours_dq=ours_dq,
                        theirs_dq=np.asarray(theirs.dq), usable=usable)


def compare_wcs(ours_path, theirs):
    """Distance in pixels between the sky positions each WCS gives to a grid of pixels."""
    import roman_datamodels as rdm
    from astropy.coordinates import SkyCoord

    with rdm.open(ours_path) as ours:
        rows, columns = ours.data.shape
        y, x = np.mgrid[0:rows:max(1, rows // 64), 0:columns:max(1, columns // 64)].astype(float)
        ours_sky = SkyCoord(*ours.meta.wcs(x, y), unit="deg")
        theirs_sky = SkyCoord(*theirs.meta.wcs(x, y), unit="deg")
        pixel_scale = ours_sky[0, 0].separation(SkyCoord(*ours.meta.wcs(x[0, 0] + 1, y[0, 0]), unit="deg"))
    offset = (ours_sky.separation(theirs_sky) / pixel_scale).decompose().value
    return parity_stats(offset, np.zeros_like(offset), 1.0)


def compare_photometry(ours_path, theirs):
    import roman_datamodels as rdm

    with rdm.open(ours_path) as ours:
        names = [name for name in ("conversion_megajanskys", "conversion_megajanskys_uncertainty",
                                   "pixel_area") if ours.meta.photometry[name] is not None]
        mine = np.array([float(ours.meta.photometry[name]) for name in names])
    peer_values = np.array([float(theirs.meta.photometry[name]) for name in names])
    stats = parity_stats(mine, peer_values, np.abs(peer_values))
    stats["pixels"] = f"{len(names)} keywords"
    return stats


def members(asn_path: Path) -> list[Path]:
    from romanpipe.association import read_science_members

    return read_science_members(asn_path)[1]


def library_models(library):
    """The models of a romancal ModelLibrary, in order (copied out of the library)."""
    models = []
    with library:
        for index in range(len(library)):
            model = library.borrow(index)
            models.append(model.copy())
            library.shelve(model, index, modify=False)
    return models


def compare_members(our_paths, their_models, *, sky=False, outliers=False):
    """Per member images (data/ERR/DQ), sky levels (``sky``) or OUTLIER flags (``outliers``)."""
    if sky:
        ours_levels, theirs_levels, errors = [], [], []
        for path, model in zip(our_paths, their_models, strict=True):
            import roman_datamodels as rdm

            with rdm.open(path) as ours:
                ours_levels.append(float(ours.meta.background.level))
                errors.append(float(np.nanmedian(np.asarray(ours.err))))
            theirs_levels.append(float(model.meta.background.level))
        stats = parity_stats(np.array(ours_levels), np.array(theirs_levels), np.array(errors))
        stats["pixels"] = f"{len(our_paths)} sky levels"
        return stats
    collected = [[], [], [], [], []]
    outlier = dq_flag("OUTLIER")
    for path, model in zip(our_paths, their_models, strict=True):
        data, err, dq = open_arrays(path, "data", "err", "dq")
        their_dq = np.asarray(model.dq)
        for bucket, values in zip(collected, (data, np.asarray(model.data), err,
                                              dq & outlier if outliers else dq,
                                              their_dq & outlier if outliers else their_dq), strict=True):
            bucket.append(values.ravel())
    data, theirs, err, dq, their_dq = (np.concatenate(bucket) for bucket in collected)
    return parity_stats(data, theirs, err, ours_dq=dq, theirs_dq=their_dq)


def compare_mosaic(ours_path, theirs):
    ours_data, ours_err, ours_weight = open_arrays(ours_path, "data", "err", "weight")
    covered = (ours_weight > 0) & (np.asarray(theirs.weight) > 0)
    stats = parity_stats(ours_data, np.asarray(theirs.data), ours_err, usable=covered)
    ours_context, theirs_context = open_arrays(ours_path, "context")[0], np.asarray(theirs.context)
    if ours_context.shape == theirs_context.shape:
        stats["dq_agreement"] = float(np.mean(ours_context == theirs_context))
    return stats


class Comparison:
    """Runs one comparison at a time, keeps its row, and survives a failing one (its error is the row)."""

    def __init__(self):
        self.rows = []

    def add(self, step, input_name, compute, reason=None):
        started = time.perf_counter()
        try:
            stats = compute()
        except Exception as error:  # noqa: BLE001 - a failed comparison is reported, the others still run
            message = f"not compared: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
            self.rows.append([step, input_name, "—", None, None, None, message])
            print(f"{step}: {message}", file=sys.stderr)
            return
        reason = REASONS.get(step, "") if reason is None else reason
        self.rows.append([step, input_name, stats["pixels"], stats["median"], stats["p999"],
                          stats["dq_agreement"], reason])
        print(f"{step}: {stats} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)


def step_by_step(comparison: Comparison, folder: Path, work: Path):
    """Each romancal step on our product of the previous step."""
    exposures = folder / "results" / "exposures"
    row = peer.read_pool_row(folder / "results" / "pool.csv")
    expo = row["exposure"]
    uncal = folder / row["path"]
    readout = peer.readout_shape_of(uncal)
    overrides = peer.reference_overrides(row, work / "peer_references", readout)

    def ours(suffix):
        return exposures / f"{expo}_{suffix}.asdf"

    with_noise = {}

    def noise(shape):
        return with_noise.setdefault(shape, read_noise(row, shape))

    def ramp_step(alias, input_path, output_suffix, dq_name):
        theirs = peer.run_step(alias, input_path, **overrides[alias])
        return compare_ramps(ours(output_suffix), theirs, noise(theirs.data.shape), dq_name)

    comparison.add("dq_init", uncal.name, lambda: ramp_step("dq_init", uncal, "dqinit", "pixeldq"))
    comparison.add("saturation", "_dqinit", lambda: ramp_step("saturation", ours("dqinit"), "saturation",
                                                              "groupdq"))
    if peer.refpix_runs(readout):
        comparison.add("refpix", "_saturation", lambda: ramp_step("refpix", ours("saturation"), "refpix",
                                                                  "groupdq"))
    else:
        comparison.rows.append(["refpix", "_saturation", "—", None, None, None,
                                f"not compared: romancal's refpix needs {peer.FULL_READOUT_COLUMNS} "
                                "columns (run --size 4096)"])
    comparison.add("linearity", "_refpix", lambda: ramp_step("linearity", ours("refpix"), "linearity",
                                                             "pixeldq"))

    def ramp_fit_then_dark():
        slopes = peer.run_step("rampfit", ours("linearity"), algorithm="ols_cas22", **overrides["rampfit"])
        theirs = peer.run_step("dark_current", slopes, **overrides["dark_current"])
        return compare_images(ours("rampfit"), theirs)

    comparison.add("dark_current", "_linearity (+ ramp_fit)", ramp_fit_then_dark)
    comparison.add("ramp_fit", "_darkcurrent", lambda: compare_images(
        ours("rampfit"), peer.run_step("rampfit", ours("darkcurrent"), algorithm="ols_cas22",
                                       **overrides["rampfit"])))
    comparison.add("assign_wcs", "_rampfit", lambda: compare_wcs(
        ours("assignwcs"), peer.run_step("assign_wcs", ours("rampfit"), **overrides["assign_wcs"])))
    comparison.add("flat_field", "_assignwcs", lambda: compare_images(
        ours("flat"), peer.run_step("flatfield", ours("assignwcs"), **overrides["flatfield"])))
    comparison.add("photom", "_flat", lambda: compare_photometry(
        ours("photom"), peer.run_step("photom", ours("flat"), **overrides["photom"])))
    return row


def mosaic_step_by_step(comparison: Comparison, folder: Path, our_parameters: dict[str, dict]):
    """romancal's flux, skymatch, outlier_detection and resample on our inputs of each."""
    from romancal.datamodels.library import ModelLibrary

    asn_folder = next((folder / "results" / "mosaics").glob("*/"))
    name = asn_folder.name
    flux_asn, skymatch_asn, outlier_asn = (asn_folder / f"{name}_{step}_asn.json"
                                           for step in ("flux", "skymatch", "outlier_detection"))
    cal_paths = [folder / "results" / "exposures" / f"{path.name.rsplit('_', 1)[0]}_cal.asdf"
                 for path in members(flux_asn)]
    steps = peer.mosaic_steps(our_parameters, None)

    def on_library(alias, paths, parameters):
        library = ModelLibrary([str(path) for path in paths], on_disk=False)
        return library_models(peer.call_quietly(peer.step_class(alias).call, library, **parameters))

    comparison.add("flux", "_cal", lambda: compare_members(members(flux_asn),
                                                           on_library("flux", cal_paths, {})))
    comparison.add("skymatch", "_flux", lambda: compare_members(
        members(skymatch_asn), on_library("skymatch", members(flux_asn), steps["skymatch"]), sky=True))
    comparison.add("outlier_detection", "_skymatch", lambda: compare_members(
        members(outlier_asn), on_library("outlier_detection", members(skymatch_asn),
                                         steps["outlier_detection"]), outliers=True))
    i2d = next((folder / "results" / "mosaics").glob("*_i2d.asdf"))
    grid = our_grid(i2d, folder / "peer_grid.asdf")
    resample_parameters = {**peer.mosaic_steps(our_parameters, grid)["resample"]}
    comparison.add("resample", "_outlier_detection", lambda: compare_mosaic(
        i2d, peer.call_quietly(peer.step_class("resample").call,
                               ModelLibrary([str(p) for p in members(outlier_asn)], on_disk=False),
                               **resample_parameters)))
    return flux_asn, cal_paths, grid, i2d


def our_grid(i2d: Path, path: Path) -> Path:
    """Our mosaic's WCS in a file, romancal's ``output_wcs`` (same grid, so pixels compare)."""
    import asdf
    import roman_datamodels as rdm

    with rdm.open(i2d) as mosaic:
        wcs = mosaic.meta.wcs
        wcs.pixel_shape = mosaic.data.shape[::-1]
        wcs.array_shape = mosaic.data.shape
        asdf.AsdfFile({"wcs": wcs}).write_to(path)
    return path


def end_to_end(comparison: Comparison, folder: Path, work: Path, label: str, row=None, suffix="cal") -> dict:
    """romancal's ExposurePipeline (ols_cas22) on the Level 1 file against our _cal; romancal's
    product is returned under "theirs" (absent if it failed), ours under "ours"."""
    row = peer.read_pool_row(folder / "results" / "pool.csv") if row is None else row
    uncal = folder / row["path"]
    readout = peer.readout_shape_of(uncal)
    steps = peer.exposure_pipeline_steps(row, work / "peer_references", readout, "ols_cas22")
    reason = REASONS["uncal → cal"] + ("" if peer.refpix_runs(readout) else
                                       "; romancal's refpix skipped (needs the full 4096-column readout)")
    products = {"ours": folder / "results" / "exposures" / f"{row['exposure']}_{suffix}.asdf"}

    def compare():
        products["theirs"] = peer.run_exposure_pipeline(uncal, steps)
        return compare_images(products["ours"], products["theirs"])

    comparison.add("uncal → cal", f"{label} {uncal.name}", compare, reason)
    return products


def likely_ramp_fit(comparison: Comparison, folder: Path, work: Path, label: str, env) -> None:
    """Our likely fit (``scripts/ramp_fit.py --algorithm likely``) against romancal 1.1's
    RampFitStep(likely) on the same _darkcurrent product, GAIN and READNOISE: romancal 1.1's
    default ramp fit, beside the ols_cas22 row of our documented chain."""
    row = peer.read_pool_row(folder / "results" / "pool.csv")
    darkcurrent = folder / "results" / "exposures" / f"{row['exposure']}_darkcurrent.asdf"
    ours = work / "likely" / f"{row['exposure']}_rampfit.asdf"

    def compute():
        ours.parent.mkdir(parents=True, exist_ok=True)
        script = HERE.parent / "scripts" / "ramp_fit.py"
        subprocess.run([sys.executable, str(script), str(darkcurrent), str(ours), "--algorithm", "likely",
                        "--override-gain", row["ref_gain"], "--override-readnoise", row["ref_readnoise"],
                        "--override-dark", row["ref_dark"]], check=True, env=env)
        return compare_images(ours, peer.run_step("rampfit", darkcurrent, algorithm="likely",
                                                  override_gain=row["ref_gain"],
                                                  override_readnoise=row["ref_readnoise"]))

    comparison.add("ramp_fit likely", f"{label} _darkcurrent", compute)


# romanisim's two exposures: the first at the pointing, the second dithered from it by a whole
# number of pixels and a half in each axis (25.5 and 15.5 of WFI01's 0.1103" x 0.1083" pixels at
# its centre), so that the mosaic samples the stars at other sub-pixel phases; the same stars in
# both. The pointing is where WFI01's SIAF reference point (its centre) looks, with its ideal +Y
# axis (the detector's columns) to the north (romanisim's ROLL_REF = PA_APER - V3IdlYAngle,
# PA_APER 0): the dither's east and north offsets run along its rows and columns.
ROMANISIM_DETECTOR = "WFI01"
ROMANISIM_POINTING_DEG = (270.0, 66.0)
ROMANISIM_DITHERS_ARCSEC = ((0.0, 0.0), (2.814, 1.678))
ROMANISIM_EXPOSURE_GAP_S = 300.0


def romanisim_exposure_id(exposure: int):
    """The observation identifiers of romanisim's ``exposure`` (program 1: given none, romanisim
    writes -999999, which no association name takes)."""
    from wfisim.level1 import ExposureId

    return ExposureId(exposure=exposure)


def romanisim_uncal_name(exposure: int) -> str:
    return f"{romanisim_exposure_id(exposure).name(ROMANISIM_DETECTOR)}_uncal.asdf"


def romanisim_stars(seed: int):
    """romanisim's star catalog (F158), the same for a given ``seed`` whichever exposure is made."""
    import galsim
    from romanisim import catalog

    ra, dec = ROMANISIM_POINTING_DEG
    return catalog.make_stars(galsim.CelestialCoord(ra * galsim.degrees, dec * galsim.degrees),
                              n=2000, radius=0.1, index=3, faintmag=22, truncation_radius=None,
                              bandpasses=["F158"], rng=galsim.UniformDeviate(seed))


def dithered_pointing(offset_arcsec: tuple[float, float]) -> tuple[float, float]:
    """ROMANISIM_POINTING_DEG moved by (east, north) arcsec on the sky: (RA, Dec) deg."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    ra, dec = ROMANISIM_POINTING_DEG
    moved = SkyCoord(ra, dec, unit="deg").spherical_offsets_by(offset_arcsec[0] * u.arcsec,
                                                               offset_arcsec[1] * u.arcsec)
    return float(moved.ra.deg), float(moved.dec.deg)


def romanisim_metadata(ma_table: str, exposure: int) -> dict:
    """romanisim's metadata for ``exposure`` (1, 2), no CRDS: our MA table's read pattern, the
    exposure's start, and WFI01's reference point (SIAF V2Ref, V3Ref) at the pointing moved by
    ROMANISIM_DITHERS_ARCSEC, ideal +Y to the north."""
    from astropy.time import Time, TimeDelta
    from romanisim import ris_make_utils

    from wfisim.matables import ma_table as our_ma_table
    from wfisim.pointing import aperture

    table = our_ma_table(ma_table)
    start = Time("2027-03-01T00:00:00") + TimeDelta((exposure - 1) * ROMANISIM_EXPOSURE_GAP_S, format="sec")
    metadata = ris_make_utils.set_metadata(date=start.isot, bandpass="F158", sca=int(ROMANISIM_DETECTOR[3:]),
                                           usecrds=False)
    metadata["exposure"]["read_pattern"] = table.read_pattern_lists()
    metadata["exposure"]["nresultants"] = len(metadata["exposure"]["read_pattern"])
    metadata["exposure"]["start_time"] = start
    reference = aperture(ROMANISIM_DETECTOR)
    ra, dec = dithered_pointing(ROMANISIM_DITHERS_ARCSEC[exposure - 1])
    metadata["wcsinfo"].update(aperture_name=reference.name, v2_ref=reference.v2_ref, v3_ref=reference.v3_ref,
                               ra_ref=ra, dec_ref=dec, roll_ref=-reference.v3_idl_yangle)
    return metadata


def romanisim_simulate(metadata: dict, stars, rng, level: int):
    """``romanisim.image.simulate`` without CRDS, drawing through the WCS romanisim builds from a
    DISTORTION reference (what it does with CRDS), ours: the WFI01 distortion our reference factory
    writes and assign_wcs reads. romanisim then writes that WCS's keywords into ``meta.wcsinfo``
    (WFI01's centre, its V2/V3 and roll), so that assign_wcs rebuilds the WCS it drew with.

    Without a distortion romanisim draws with galsim.roman's WCS: (ra_ref, dec_ref) taken as the
    centre of the focal plane, galsim's own roll and distortion, and ``meta.wcsinfo`` left as given
    (v2_ref = v3_ref = 0, the boresight), which assign_wcs reads 0.5° away from where the stars were
    drawn. romanisim 0.14's simulate passes no distortion on: its get_wcs gets ours for the call.
    """
    import functools
    from unittest import mock

    from romanisim import image
    from romanisim.models import wcs as romanisim_wcs

    from wfisim.pointing import distortion_model

    distortion = distortion_model(ROMANISIM_DETECTOR, (peer.FULL_READOUT_COLUMNS,) * 2).copy()
    drawing_wcs = functools.partial(romanisim_wcs.get_wcs, distortion=distortion)
    with mock.patch.object(romanisim_wcs, "get_wcs", drawing_wcs):
        return image.simulate(metadata, stars, usecrds=False, psftype="galsim", level=level, crparam={},
                              rng=rng)


def label_romanisim_level1(level1, exposure: int) -> None:
    """Name romanisim's Level 1 ``exposure`` and give it the observation its name says."""
    level1["meta"]["filename"] = romanisim_uncal_name(exposure)
    level1["meta"]["observation"].update(romanisim_exposure_id(exposure).observation_metadata())


def romanisim_level1_is_current(path: Path) -> bool:
    """Whether ``path`` was made by :func:`romanisim_level1` as it is now: drawn through WFI01's
    distortion (romanisim then names the aperture WFI01_FULL) and given its observation."""
    import roman_datamodels as rdm

    with rdm.open(path) as model:
        return (model.meta.wcsinfo.aperture_name == f"{ROMANISIM_DETECTOR}_FULL"
                and int(model.meta.observation.program) > 0)


def romanisim_level1(path: Path, ma_table: str, seed: int = 7, exposure: int = 1) -> Path:
    """A full-detector Level 1 file from romanisim, offline (cached: made once): ``exposure`` (1, 2)
    at its ROMANISIM_DITHERS_ARCSEC offset, the stars of :func:`romanisim_stars` (``seed``), its
    own noise and cosmic rays (``seed + exposure``).

    No CRDS (romanisim's built-in detector parameters), WFI01's distortion from our reference
    factory (:func:`romanisim_simulate`), galsim's Roman PSF, no stpsf, a star catalog made here
    (no Gaia query); our MA table's read pattern; the observation its name says.
    """
    if path.is_file() and romanisim_catalog(path).is_file() and romanisim_level1_is_current(path):
        return path
    import asdf
    import galsim

    stars = romanisim_stars(seed)
    level1, extras = romanisim_simulate(romanisim_metadata(ma_table, exposure), stars,
                                        galsim.UniformDeviate(seed + exposure), level=1)
    label_romanisim_level1(level1, exposure)
    path.parent.mkdir(parents=True, exist_ok=True)
    romanisim_catalog(path).parent.mkdir(parents=True, exist_ok=True)
    # The stars' RA, Dec: the fidelity figures' truth and tweakreg's reference catalog.
    stars["ra", "dec"].write(romanisim_catalog(path), format="ascii.ecsv", overwrite=True)
    # Written under another name and renamed: an interrupted run leaves no file taken for made.
    partial = path.with_name(path.name + ".partial")
    asdf.AsdfFile({"roman": level1}).write_to(partial)
    partial.replace(path)
    return path


def romanisim_small_level1(uncal: Path, truth: Path, path: Path, seed: int = 7) -> Path:
    """A small Level 1 file whose ramp romanisim reads out (``romanisim.l1.make_l1``: electrons
    apportioned to the reads, cosmic rays, IPC, read noise, rounding, saturation) from our
    simulator's scene: ``truth``'s sky-plus-dark electron rate (Poisson-drawn here) and detector
    (gain, read noise, bias, saturation), in a copy of ``uncal`` (its metadata and read pattern).
    romanisim's own images are full detectors only (:func:`romanisim_level1`); this keeps a test
    small. romanisim's read time (3.16 s) stands for our frame time."""
    import galsim
    import roman_datamodels as rdm
    from romanisim import l1

    from wfisim.truth import read_truth

    scene = read_truth(truth)
    detector = scene["detector"]
    with rdm.open(uncal) as model:
        read_pattern = [list(reads) for reads in model.meta.exposure.read_pattern]
        duration = l1.read_pattern_to_tij(read_pattern)[-1][-1]
        mean_electrons = (scene["rate_e_per_s"] + detector["dark_current_e_per_s"]) * duration
        electrons = np.random.default_rng(seed).poisson(mean_electrons).astype(np.float64)
        # Our bias is the reset level (romanisim's pedestal would come on top of it).
        # romanisim's cosmic rays come at its flux over the area it is given (a full detector's
        # by default): this array's, at the H4RG's 10 µm pixels.
        area_cm2 = electrons.size * (10e-4) ** 2
        resultants, _ = l1.make_l1(galsim.Image(electrons), read_pattern, pedestal=0,
                                   read_noise=detector["read_noise_dn"], gain=detector["gain_e_per_dn"],
                                   crparam={"area": area_cm2}, rng=galsim.UniformDeviate(seed),
                                   saturation=detector["saturation_level_dn"])
        model.data = (resultants + detector["bias_dn"]).clip(0, np.iinfo(np.uint16).max).astype(np.uint16)
        model.meta.filename = path.name
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return path


def romanisim_small_campaign(folder: Path) -> Path:
    """``folder``'s first exposure with its ramp read out by romanisim (:func:`romanisim_small_level1`),
    its references, CRDS cache, catalogs and workflow.yaml: ``<folder>_romanisim`` (made once)."""
    import shutil

    uncal = sorted((folder / "uncal").glob("*_uncal.asdf"))[0]
    other = folder.parent / f"{folder.name}_romanisim"
    level1 = other / "uncal" / uncal.name
    if not level1.is_file():
        truth = folder / "truth" / uncal.name.replace("_uncal.asdf", "_truth.asdf")
        romanisim_small_level1(uncal, truth, level1)
    for shared in ("crds_cache", "catalogs"):
        if not (other / shared).exists():
            (other / shared).symlink_to((folder / shared).resolve())
    shutil.copy(folder / "workflow.yaml", other / "workflow.yaml")
    return other


def romanisim_catalog(level1: Path) -> Path:
    return level1.parent.parent / "catalogs" / "romanisim_stars.ecsv"


def romanisim_run(folder: Path, ma_table: str, env) -> Path:
    """Our workflow to the mosaic on romanisim's two Level 1 files (:func:`romanisim_level1`), with
    our simulator's references and CRDS cache: source_detection (``fit_psf``: romanisim draws
    galsim's Roman PSF) and tweakreg against romanisim's star catalog, then one mosaic of the
    overlapping pair (``grouping: overlap``: our simulator's sky map is elsewhere on the sky) at
    resample's default weights. No source catalogs (not measured here)."""
    import yaml

    romanisim_folder = folder.parent / f"romanisim_{ma_table}"
    uncal = [romanisim_level1(romanisim_folder / "uncal" / romanisim_uncal_name(exposure), ma_table,
                              exposure=exposure) for exposure in range(1, len(ROMANISIM_DITHERS_ARCSEC) + 1)]
    if not (romanisim_folder / "crds_cache").exists():
        (romanisim_folder / "crds_cache").symlink_to(folder / "crds_cache")
    config = {"inputs": {"uncal_dir": "uncal"}, "crds": {"path": "crds_cache"}, "target": "i2d",
              "associations": {"grouping": "overlap"}, "source_detection": {"fit_psf": True},
              "tweakreg": {"abs_refcat": str(romanisim_catalog(uncal[0]).relative_to(romanisim_folder))},
              "source_catalog": {"skip": True}}
    (romanisim_folder / "workflow.yaml").write_text(yaml.safe_dump(config))
    # The likely row fits our _darkcurrent again (KEEP_RAMPS); the romancal rows compare _photom.
    subprocess.run(snakemake_command(romanisim_folder, "--notemp", *KEEP_RAMPS), check=True, env=env)
    return romanisim_folder


PRESET = HERE.parent / "config" / "romancal-1.1.yaml"
# Snakemake arguments keeping every ramp product (the workflow removes spent ramps itself, --notemp
# or not, unless keep_ramp_intermediates): the step-by-step comparisons read them.
KEEP_RAMPS = ["--config", "keep_ramp_intermediates=True"]
PRESET_HEADERS = ["inputs", "pixels compared", "median \\|Δ\\|/err", "99.9 % \\|Δ\\|/err", "jump flags agree",
                  "DQ agreement", "notes"]
# Issue 24's goals for the preset against romancal's default ExposurePipeline: median and 99.9th
# percentile of |Δ|/err at most these, JUMP_DET set alike on at least this fraction of the pixels.
PRESET_GOALS = {"median": 0.01, "p999": 0.1, "jump_agreement": 0.999}


def preset_run(folder: Path, env, target: str = "cal") -> Path:
    """Our workflow with ``config/romancal-1.1.yaml`` on the first exposure of ``folder`` (its
    references, CRDS cache and catalogs linked), to ``target``: ``<folder>_romancal11``. On a readout
    smaller than the full detector our refpix is skipped, as romancal's must be."""
    import yaml

    run = folder.parent / f"{folder.name}_romancal11"
    uncal = sorted((folder / "uncal").glob("*_uncal.asdf"))[0]
    (run / "uncal").mkdir(parents=True, exist_ok=True)
    for link, source in ((run / "uncal" / uncal.name, uncal), (run / "crds_cache", folder / "crds_cache"),
                         (run / "catalogs", folder / "catalogs")):
        if source.exists() and not link.exists():
            link.symlink_to(source.resolve())
    config = yaml.safe_load((folder / "workflow.yaml").read_text())
    config["target"] = target
    if not peer.refpix_runs(peer.readout_shape_of(uncal)):
        # romancal's refpix cannot run on a smaller readout: ours is skipped too, like with like.
        config["refpix"] = {**config.get("refpix", {}), "skip": True}
    (run / "workflow.yaml").write_text(yaml.safe_dump(config))
    # The intermediate products stay for a step-by-step look where the goals are missed (the
    # workflow removes spent ramps itself, --notemp or not).
    preset = ["--configfile", str(run / "workflow.yaml"), str(PRESET), *KEEP_RAMPS]
    subprocess.run(snakemake_command(run, *preset), check=True, env=env)
    return run


def jump_agreement(ours_dq, theirs_dq) -> float:
    """The fraction of pixels where both or neither DQ word has JUMP_DET."""
    jump = dq_flag("JUMP_DET")
    return float(np.mean((np.asarray(ours_dq) & jump != 0) == (np.asarray(theirs_dq) & jump != 0)))


def preset_parity(run: Path, suffix: str = "cal") -> dict:
    """Our romancal-1.1 preset's product against romancal 1.1's default ExposurePipeline on the same
    Level 1 file and the references our run used (:func:`peer.romancal_default_steps`): the
    :func:`compare_images` figures, ``jump_agreement`` and our ``jumps`` (pixels with JUMP_DET)."""
    row = peer.read_pool_row(run / "results" / "pool.csv")
    uncal = Path(row["path"])
    readout = peer.readout_shape_of(uncal)
    theirs = peer.run_exposure_pipeline(uncal, peer.romancal_default_steps(row, run / "peer", readout))
    ours = run / "results" / "exposures" / f"{row['exposure']}_{suffix}.asdf"
    stats = compare_images(ours, theirs)
    ours_dq = open_arrays(ours, "dq")[0]
    stats["jump_agreement"] = jump_agreement(ours_dq, theirs.dq)
    stats["jumps"] = int(np.count_nonzero(ours_dq & dq_flag("JUMP_DET")))
    stats["notes"] = "" if peer.refpix_runs(readout) else (
        "refpix skipped on both sides and romancal's dark_decay (full 4096-column readout only; no decay "
        "signal simulated)")
    return stats


def preset_row(label: str, make_run, suffix: str = "cal") -> list:
    """One row of the preset's table (``make_run()`` runs our preset and gives its folder), or why it
    could not be computed."""
    try:
        stats = preset_parity(make_run(), suffix)
    except Exception as error:  # noqa: BLE001 - a failed comparison is reported, the others still run
        message = f"not compared: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        print(f"preset {label}: {message}", file=sys.stderr)
        return [label, "—", None, None, None, None, message]
    print(f"preset {label}: {stats}", file=sys.stderr)
    return [label, stats["pixels"], stats["median"], stats["p999"], stats["jump_agreement"],
            stats["dq_agreement"], stats["notes"]]


FIDELITY_HEADERS = ["inputs", "figure", "value", "goal (issue 21)"]
# Stars drawn with galsim's Roman PSF, the model source_detection's fit_psf fits (and the simulator
# then asks for fit_psf): fitted to Gaussian stars it moved bright stars by up to 0.3 pixel and
# left tweakreg 8.9 mas off at 256 px (0.5 mas on Roman-PSF stars).
CAMPAIGN_PSF = "roman"


def simulator_truth(folder: Path, exposures) -> tuple:
    """Our simulator's stars (union over ``exposures``) and, per exposure, their true Level 2 pixels."""
    from wfisim.truth import read_truth

    positions, pixels = {}, {}
    for expo in exposures:
        catalog = read_truth(folder / "truth" / f"{expo}_truth.asdf")["catalog"]
        for source, ra, dec in zip(catalog["source_id"], catalog["ra"], catalog["dec"], strict=True):
            positions.setdefault(int(source), (ra, dec))
        # Readout pixels less the 4-pixel reference border (wfisim.truth).
        pixels[expo] = (catalog["ra"], catalog["dec"], catalog["x"] - 4, catalog["y"] - 4)
    ra, dec = np.array(list(positions.values())).T
    return fidelity.Truth(ra, dec), pixels


def exposure_fidelity_rows(label: str, photom: Path, refcat: Path, truth, x, y, work: Path) -> list:
    figures = fidelity.exposure_fidelity(photom, refcat, truth, x, y, work)
    after = "astrometry after tweakreg, fit_psf {} (median, mas)"
    return [[label, "astrometry before tweakreg (median, mas)", figures["input astrometry mas"], ""],
            [label, after.format("off"), figures["centroid astrometry mas"], "≤ 2"],
            [label, after.format("on"), figures["fit_psf astrometry mas"], "≤ 2"],
            [label, f"detection purity ({figures['detections']} detections)", figures["purity"], "≥ 0.95"],
            [label, f"completeness, stars ≥ {fidelity.BRIGHT_SNR:g}σ ({figures['bright_stars']})",
             figures["completeness"], "≥ 0.95"]]


def mosaic_row(label: str, mosaic, singles, truth, weight_type: str, origin: str) -> list:
    """Mosaic over single-exposure fluxes of the stars at least BRIGHT_SNR significant in the first
    single exposure."""
    ratio, stars = fidelity.mosaic_over_single(mosaic, singles, truth,
                                               keep=fidelity.significant_stars(singles[0], truth))
    return [label, f"mosaic / single-exposure star flux, {weight_type}, {origin}, stars ≥ "
                   f"{fidelity.BRIGHT_SNR:g}σ ({stars})", ratio, "0.99–1.01"]


def default_weight_mosaic_rows(label: str, cal_paths, truth) -> list:
    """Our resample at its default weights on ``cal_paths``: mosaic over single-exposure fluxes."""
    from romanpipe.params import step_defaults

    import roman_datamodels as rdm

    import resample

    parameters = step_defaults("resample")
    models = [rdm.open(path) for path in cal_paths]
    try:
        mosaic, = resample.resample_models(models, [path.name for path in cal_paths], parameters,
                                           association_name="fidelity")
        return [mosaic_row(label, mosaic, models, truth, parameters["weight_type"], "resample alone")]
    finally:
        for model in models:
            model.close()


def workflow_mosaic_rows(label: str, folder: Path, truth) -> list:
    """The workflow's mosaic (flux, skymatch, outlier_detection, resample at the configured weights)
    over its members' _flux products (the _cal in the mosaic's unit, MJy/sr)."""
    from romanpipe.params import step_defaults

    import roman_datamodels as rdm
    import yaml

    configured = yaml.safe_load((folder / "workflow.yaml").read_text()).get("resample", {})
    weight_type = configured.get("weight_type", step_defaults("resample")["weight_type"])
    i2d, = (folder / "results" / "mosaics").glob("*_i2d.asdf")
    flux_asn, = (folder / "results" / "mosaics").glob("*/*_flux_asn.json")
    models = [rdm.open(path) for path in members(flux_asn)]
    try:
        with rdm.open(i2d) as mosaic:
            return [mosaic_row(label, mosaic, models, truth, weight_type,
                               f"the workflow's _i2d of {len(models)} exposures")]
    finally:
        for model in models:
            model.close()


def workflow_astrometry_rows(label: str, folder: Path, truth) -> list:
    """Each exposure's _cal WCS after the workflow's own source_detection and tweakreg, against
    the truth: the stars' true pixels are where the _photom WCS (assign_wcs) puts them (on romanisim,
    within 0.1 mas of where it drew them: :func:`romanisim_simulate`)."""
    import roman_datamodels as rdm
    import yaml

    settings = yaml.safe_load((folder / "workflow.yaml").read_text())
    fit_psf = settings.get("source_detection", {}).get("fit_psf")
    rows = []
    for cal in sorted((folder / "results" / "exposures").glob("*_cal.asdf")):
        photom = cal.with_name(cal.name.replace("_cal.asdf", "_photom.asdf"))
        with rdm.open(photom) as image:
            x, y, on = fidelity.true_pixels(image.meta.wcs, truth, image.data.shape)
        on_image = fidelity.Truth(truth.ra[on], truth.dec[on])
        with rdm.open(cal) as aligned:
            error = fidelity.wcs_error_mas(aligned.meta.wcs, x[on], y[on], on_image)
            status = aligned.meta.cal_step.tweakreg
        rows.append([label, f"astrometry of the workflow's _cal, fit_psf {'on' if fit_psf else 'off'}, "
                            f"{cal.name.split('_')[2]} (tweakreg {status}; median, mas)", error, "≤ 2"])
    return rows


def peer_flux_rows(label: str, products: dict, truth) -> list:
    import roman_datamodels as rdm

    if "theirs" not in products:
        return [[label, "our / romancal star flux", "not compared: romancal's run failed", ""]]
    with rdm.open(products["ours"]) as ours:
        ratio, stars = fidelity.ours_over_peer(ours, products["theirs"], truth)
    return [[label, f"our / romancal star flux, stars ≥ {fidelity.BRIGHT_SNR:g}σ ({stars})", ratio, "1"]]


def guarded(rows: list, label: str, compute) -> None:
    """Append ``compute()``'s rows, or one row saying why they could not be computed."""
    try:
        computed = compute()
    except Exception as error:  # noqa: BLE001 - a failed figure is reported, the others still run
        message = f"not computed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        rows.append([label, message, None, ""])
        print(f"fidelity {label}: {message}", file=sys.stderr)
        return
    rows.extend(computed)
    for row in computed:  # as they come: a long run's figures are in its log before the table
        print("fidelity " + " | ".join(str(value) for value in row), file=sys.stderr)


def romanisim_exposure_fidelity_rows(photom: Path, catalog_path: Path, truth, work: Path) -> list:
    """:func:`exposure_fidelity_rows` on romanisim's ``photom``: the stars' true pixels are where
    its assign_wcs WCS puts them (within 0.1 mas of where romanisim drew them: :func:`romanisim_simulate`)."""
    import roman_datamodels as rdm

    with rdm.open(photom) as image:
        x, y = image.meta.wcs.invert(truth.ra, truth.dec, with_bounding_box=False)
    return exposure_fidelity_rows("romanisim", photom, catalog_path, truth, x, y, work)


def romanisim_fidelity_rows(rows: list, folder: Path, products: dict) -> None:
    """The romanisim exposures' figures, appended to ``rows`` (the quick ones first): their stars
    are the truth and tweakreg's reference catalog."""
    from astropy.table import Table

    catalog_path = romanisim_catalog(folder / "uncal" / romanisim_uncal_name(1))
    catalog = Table.read(catalog_path)
    truth = fidelity.Truth(np.asarray(catalog["ra"], float), np.asarray(catalog["dec"], float))
    guarded(rows, "romanisim", lambda: workflow_astrometry_rows("romanisim", folder, truth))
    guarded(rows, "romanisim", lambda: workflow_mosaic_rows("romanisim", folder, truth))
    guarded(rows, "romanisim", lambda: peer_flux_rows("romanisim", products, truth))
    guarded(rows, "romanisim", lambda: romanisim_exposure_fidelity_rows(products["ours"], catalog_path, truth,
                                                                        folder / "peer" / "fidelity"))


def our_simulator_parity(args, folder: Path, env) -> tuple[list, list, list]:
    """Our simulator's four exposures: the step-by-step and end-to-end comparisons, the fidelity
    figures and the preset's row."""
    from romanpipe.params import step_defaults

    work = folder / "peer"
    started = time.perf_counter()
    # Every intermediate product is compared, so none may be removed as temporary; a run that
    # already removed them is redone from dq_init.
    kept = any((folder / "results" / "exposures").glob("*_dqinit.asdf"))
    done = (folder / "results" / "pool.csv").is_file()
    rerun = ["--forcerun", "dq_init"] if done and not kept else []
    subprocess.run(snakemake_command(folder, "--notemp", *documented_outlier_settings(folder), *KEEP_RAMPS,
                                     *rerun),
                   check=True, env=env)
    print(f"our workflow: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    peer.configure_environment(folder / "crds_cache")

    comparison = Comparison()
    row = step_by_step(comparison, folder, work)
    likely_ramp_fit(comparison, folder, work, "our simulator", env)
    our_parameters = {step: step_defaults(step) for step in ("skymatch", "outlier_detection", "resample")}
    flux_asn, cal_paths, grid, i2d = mosaic_step_by_step(comparison, folder, our_parameters)
    our_products = end_to_end(comparison, folder, work, "our simulator", row)
    comparison.add("cal → i2d", flux_asn.name.replace("_flux_asn", "_asn"), lambda: compare_mosaic(
        i2d, peer.run_mosaic_pipeline(_cal_association(flux_asn, folder, work),
                                      peer.mosaic_steps(our_parameters, grid))))

    fidelity_rows = []
    label = "our simulator"
    exposures = [f"{path.name.rsplit('_', 1)[0]}" for path in cal_paths]
    truth, pixels = simulator_truth(folder, exposures)
    expo = row["exposure"]
    exposure_truth = fidelity.Truth(pixels[expo][0], pixels[expo][1])
    photom = folder / "results" / "exposures" / f"{expo}_photom.asdf"
    guarded(fidelity_rows, label, lambda: exposure_fidelity_rows(
        label, photom, folder / "catalogs" / "gaia_like.ecsv", exposure_truth, *pixels[expo][2:],
        work / "fidelity"))
    guarded(fidelity_rows, label, lambda: default_weight_mosaic_rows(label, cal_paths, truth))
    guarded(fidelity_rows, label, lambda: peer_flux_rows(label, our_products, exposure_truth))

    preset_rows = [preset_row("our simulator", lambda: preset_run(folder, env))]
    if args.size != peer.FULL_READOUT_COLUMNS:
        preset_rows.append(preset_row("our scene, romanisim's readout (romanisim.l1)",
                                      lambda: preset_run(romanisim_small_campaign(folder), env)))
    return comparison.rows, fidelity_rows, preset_rows


def romanisim_parity(args, folder: Path, env) -> tuple[list, list, list]:
    """romanisim's two exposures (:func:`romanisim_run`): romancal end to end and the likely row on
    the first, the fidelity figures, the preset's row. Our simulator's run gives the references."""
    romanisim_folder = romanisim_run(folder, args.ma_table, env)
    peer.configure_environment(folder / "crds_cache")
    comparison = Comparison()
    first = peer.read_pool_row(romanisim_folder / "results" / "pool.csv",
                               romanisim_folder / "uncal" / romanisim_uncal_name(1))
    products = end_to_end(comparison, romanisim_folder, romanisim_folder / "peer", "romanisim", first,
                          suffix="photom")
    fidelity_rows = []
    romanisim_fidelity_rows(fidelity_rows, romanisim_folder, products)
    likely_ramp_fit(comparison, romanisim_folder, romanisim_folder / "peer", "romanisim", env)
    preset_rows = [preset_row("romanisim", lambda: preset_run(romanisim_folder, env, "photom"), "photom")]
    return comparison.rows, fidelity_rows, preset_rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="readout rows = columns (4096: full detector)")
    parser.add_argument("--ma-table", default="IMG_UNEVEN_6")
    parser.add_argument("--out", type=Path, default=Path("bench/parity"))
    parser.add_argument("--romanisim", action="store_true",
                        help="also compare on two romanisim Level 1 files (full size only)")
    parser.add_argument("--romanisim-only", action="store_true",
                        help="only the romanisim rows (our simulator's campaign still gives the references)")
    args = parser.parse_args(argv)
    with_romanisim = args.romanisim or args.romanisim_only
    if with_romanisim and args.size != peer.FULL_READOUT_COLUMNS:
        parser.error(f"romanisim simulates the full detector only: --size {peer.FULL_READOUT_COLUMNS}")

    env = clean_environment()
    folder = (args.out / f"sim_{args.size}_{args.ma_table}_{CAMPAIGN_PSF}_psf").resolve()
    simulate_campaign(folder, args.size, args.ma_table, env, psf=CAMPAIGN_PSF)
    comparison_rows, fidelity_rows, preset_rows = [], [], []
    parts = ([] if args.romanisim_only else [our_simulator_parity]) + ([romanisim_parity] if with_romanisim
                                                                       else [])
    for part in parts:
        for rows, more in zip((comparison_rows, fidelity_rows, preset_rows), part(args, folder, env),
                              strict=True):
            rows.extend(more)

    table = markdown_table(HEADERS, comparison_rows)
    table += ("\nromancal 1.1's chain (config/romancal-1.1.yaml) against romancal 1.1's default "
              "ExposurePipeline, uncal → cal on the first exposure (goals, issue 24: median ≤ "
              f"{PRESET_GOALS['median']}, 99.9 % ≤ {PRESET_GOALS['p999']}, jump flags ≥ "
              f"{PRESET_GOALS['jump_agreement']:.1%}):\n\n" + markdown_table(PRESET_HEADERS, preset_rows))
    table += "\nFidelity against the truth (benchmarks/fidelity.py):\n\n" + markdown_table(FIDELITY_HEADERS,
                                                                                       fidelity_rows)
    inputs = ("two dithered romanisim exposures of WFI01 (F158, galsim's Roman PSF)" if args.romanisim_only
              else f"our simulator (4 dithered F158 exposures of WFI01, {CAMPAIGN_PSF} PSF)"
                   f"{', and two dithered romanisim exposures' if args.romanisim else ''}")
    flags = " --romanisim-only" if args.romanisim_only else " --romanisim" if args.romanisim else ""
    header = (f"Parity with romancal, {args.size}×{args.size} readout, {args.ma_table}, {inputs}.\n"
              f"{machine_description()}\n"
              f"Reproduce: `python benchmarks/parity.py --size {args.size} --ma-table {args.ma_table}{flags}`"
              f"{'' if args.romanisim_only else f' (`make parity SIZE={args.size}`)'}\n\n")
    output = args.out / f"parity_{args.size}_{args.ma_table}{'_romanisim' if args.romanisim_only else ''}.md"
    output.write_text(header + table)
    print(header + table)
    return 0


def _cal_association(flux_asn: Path, folder: Path, work: Path) -> Path:
    """Our association with the members' _cal products (romancal's MosaicPipeline starts from _cal)."""
    tree = json.loads(flux_asn.read_text())
    exposures = folder / "results" / "exposures"
    for product in tree["products"]:
        for member in product["members"]:
            name = Path(member["expname"]).name.rsplit("_", 1)[0]
            member["expname"] = str(exposures / f"{name}_cal.asdf")
    work.mkdir(parents=True, exist_ok=True)
    path = work / flux_asn.name.replace("_flux_asn", "_cal_asn")
    path.write_text(json.dumps(tree, indent=2))
    return path


if __name__ == "__main__":
    sys.exit(main())
