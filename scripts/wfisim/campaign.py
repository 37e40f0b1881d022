"""A simulated observing campaign: Level 1 exposures, their truth, references and a CRDS cache.

One sky (:class:`~wfisim.sky.FieldCatalog`: stars with proper motions covering every
simulated detector and dither) is observed in every imaging filter with a dither
pattern, then optionally with spectroscopic elements (``spectral_exposures``); all
detectors expose together under one attitude per exposure. Each exposure's true
attitude is the commanded one (``pointing`` dithered); what its files record is that
attitude mis-known by ``pointing_error`` (a seeded random direction, magnitudes
exactly as configured; see ``wfisim.truth``). Output folder layout::

    <out>/uncal/<expo>_uncal.asdf       Level 1 exposures
    <out>/truth/<expo>_truth.asdf       what was simulated (see wfisim.truth)
    <out>/truth/sky_catalog.ecsv        every star: true position at 2016.0, pm, flux (e/s), G
    <out>/catalogs/gaia_like.ecsv       the stars Gaia would see, Gaia DR3 columns (wfisim.sky)
    <out>/catalogs/gaia_like.parquet    the same table
    <out>/references/roman_wfi_*.asdf   per detector: MASK, SATURATION, GAIN, READNOISE, LINEARITY,
                                        DARK, REFPIX (full readout layout only), PHOTOM; per
                                        detector and optical element: DISTORTION, FLAT (imaging)
    <out>/references/roman_wfi_skycells_*.asdf  the sky map (SKYCELLS) of the campaign's sky area
    <out>/crds_cache/                   offline CRDS cache holding those references
    <out>/workflow.yaml                 Snakemake config for ``--directory <out>``

Campaign settings (YAML keys = :class:`CampaignConfig` fields): ``detectors``,
``filters`` (imaging), ``exposures_per_filter``, ``dithers`` ([dx, dy] in nominal
0.11" pixels of WFI_CEN's ideal frame; the sky moves by minus this), ``size``,
``ma_table``, ``seed``, ``stars`` (per detector readout area, plus
``saturating_stars`` per detector, kept inside the array in every dither),
``star_flux_e_per_s`` (log-uniform range), ``sky_e_per_s`` (number or per element),
``start_time``, ``pointing`` (WFI_CEN's ra, dec and pa_v3, deg), ``pointing_error``
(``offset_arcsec``, ``roll_deg``), ``proper_motion_mas_per_yr`` (rms of each of
pmra, pmdec), ``gaia_faint_limit_g``, ``spectral_exposures`` ({element: count}, e.g.
{PRISM: 1}), ``psf`` (gaussian or roman), ``cosmic_ray_flux_per_cm2_s``, ``program``,
``title``, ``dark_decay_signal`` (true: romancal 1.1's dark decay signal in every ramp,
``wfisim.dark_decay``; the DARKDECAYSIGNAL reference, one per campaign, says so either way),
``skymap`` (the sky map's ``pixel_scale``, ``nxy_skycell``, ``border``, ``region_deg``; see
``wfisim.skymap``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from romanpipe import crds_cache
from romanpipe.products import write_atomic

import numpy as np
import yaml
from astropy.table import Table
from astropy.time import Time, TimeDelta

from .cosmic_rays import CosmicRays
from .dark_decay import DarkDecaySignal
from .detector import BORDER, DetectorModel, build_detector, detector_key
from .flat import true_flat
from .level1 import IMAGING_EXPOSURE_TYPE, SPECTRAL_EXPOSURE_TYPE, ExposureId, make_level1, write_level1
from .matables import MaTable, ma_table
from .nonlinearity import nonlinear_response
from .photometry import PIXEL_AREA_SR, photmjsr
from .pointing import NOMINAL_PIXEL_SCALE_ARCSEC, DetectorGeometry, Pointing, pointing_metadata
from .psf import PSF_MODELS, render_stars, stamp_half_width
from .ramps import RampEffect, simulate_ramp
from .references import SPECTRAL_ELEMENTS, next_reference_path, write_darkdecaysignal, write_references
from .refpix_effects import ReferencePixelEffects, fits_readout_layout, readout_electronics
from .scene import (
    PIVOT_WAVELENGTH_UM,
    Catalog,
    dispersed_catalog,
    psf_fwhm_pixels,
    render_rate,
    saturating_flux_range,
)
from .settings import SettingsFile
from .sky import FieldCatalog, gaia_like_table
from .skymap import Tessellation, make_skycells
from .truth import ExposureTruth

__all__ = ["CampaignConfig", "CampaignOutputs", "FieldCatalog", "simulate_campaign", "simulate_exposure"]

log = logging.getLogger(__name__)

EXPOSURE_GAP_S = 30.0  # slew, settle and reset between exposures
_STARS_STREAM = 1  # keys the star catalog's random stream apart from the detector's
_SKY_STREAM = 4  # proper motions and the Gaia-like catalog's errors
_POINTING_ERROR_STREAM = 5
# Spectral exposures: each star's light spread along its column over these rows (relative to
# the star), blurred by the Gaussian PSF of the middle filter.
DISPERSION_PIXELS = (-15.0, 15.0)
DISPERSION_PSF_FILTER = "F129"
DISPERSION_REACH = math.ceil(max(abs(limit) for limit in DISPERSION_PIXELS))


@dataclass(frozen=True)
class CampaignConfig(SettingsFile):
    """What to simulate; the YAML keys are these field names (see the module docstring)."""

    KIND = "campaign"

    detectors: list[str] = field(default_factory=lambda: ["WFI01"])
    filters: list[str] = field(default_factory=lambda: ["F158"])
    exposures_per_filter: int = 1
    dithers: list[list[float]] | None = None  # [dx, dy] nominal pixels per exposure; None: default_dithers()
    size: int = 256  # rows = columns of the readout, reference border included
    ma_table: str = "IMG_UNEVEN_6"
    seed: int = 1
    stars: int = 40
    saturating_stars: int = 2
    star_flux_e_per_s: list[float] = field(default_factory=lambda: [20.0, 2.0e3])
    sky_e_per_s: float | dict[str, float] = 1.0
    start_time: str = "2027-03-01T00:00:00"
    pointing: dict[str, float] = field(default_factory=lambda: {"ra": 270.0, "dec": 66.0, "pa_v3": 0.0})
    pointing_error: dict[str, float] = field(default_factory=lambda: {"offset_arcsec": 0.0, "roll_deg": 0.0})
    proper_motion_mas_per_yr: float = 3.0
    gaia_faint_limit_g: float = 21.0
    spectral_exposures: dict[str, int] = field(default_factory=dict)
    psf: str = "gaussian"
    program: int = 1
    title: str = "Simulated WFI imaging campaign"
    cosmic_ray_flux_per_cm2_s: float = 0.0  # about 5 at L2
    dark_decay_signal: bool = False
    skymap: dict[str, float] = field(default_factory=dict)  # wfisim.skymap.Tessellation's fields

    def __post_init__(self) -> None:
        if self.dithers is not None and len(self.dithers) != self.exposures_per_filter:
            raise ValueError(f"{len(self.dithers)} dithers for {self.exposures_per_filter} "
                             "exposures per filter")
        unknown_filters = sorted(set(self.filters) - set(PIVOT_WAVELENGTH_UM))
        if unknown_filters:
            raise ValueError(f"unknown imaging filter(s) {unknown_filters}; "
                             f"known: {', '.join(PIVOT_WAVELENGTH_UM)}")
        unknown_spectral = sorted(set(self.spectral_exposures) - SPECTRAL_ELEMENTS)
        if unknown_spectral:
            raise ValueError(f"unknown spectral element(s) {unknown_spectral}; "
                             f"known: {', '.join(sorted(SPECTRAL_ELEMENTS))}")
        if self.psf not in PSF_MODELS:
            raise ValueError(f"unknown psf {self.psf!r}; known: {', '.join(PSF_MODELS)}")
        if set(self.pointing_error) != {"offset_arcsec", "roll_deg"}:
            raise ValueError("pointing_error needs exactly offset_arcsec and roll_deg")
        self.tessellation()  # a bad sky map setting fails here, before anything is simulated

    def tessellation(self) -> Tessellation:
        try:
            return Tessellation(**self.skymap)
        except TypeError as err:
            raise ValueError(f"skymap: {err}") from None

    def sky_for(self, optical_element: str) -> float:
        if isinstance(self.sky_e_per_s, dict):
            try:
                return float(self.sky_e_per_s[optical_element])
            except KeyError:
                raise ValueError(f"sky_e_per_s has no value for {optical_element}") from None
        return float(self.sky_e_per_s)

    def dither_offsets(self) -> list[tuple[float, float]]:
        if self.dithers is not None:
            return [(float(dx), float(dy)) for dx, dy in self.dithers]
        return default_dithers(self.exposures_per_filter)

    def observations(self) -> list[tuple[str, list[tuple[float, float]]]]:
        """(optical element, dither offsets) per observation: the filters, then the spectral elements.

        A spectral observation of ``n`` exposures takes the first ``n`` dithers (cycling).
        """
        dithers = self.dither_offsets()
        spectral = [(element, [dithers[i % len(dithers)] for i in range(count)])
                    for element, count in self.spectral_exposures.items() if count > 0]
        return [(element, dithers) for element in self.filters] + spectral


def default_dithers(count: int) -> list[tuple[float, float]]:
    """Steps of a few pixels whose fractional parts visit the four half-pixel phases."""
    return [(3.0 * i + 0.5 * (i % 2), 2.0 * i + 0.5 * ((i // 2) % 2)) for i in range(count)]


@dataclass(frozen=True)
class CampaignOutputs:
    uncal: list[Path]
    truth: list[Path]
    references: list[Path]
    crds_context: str
    workflow_config: Path
    gaia_catalog: Path | None = None
    sky_catalog: Path | None = None


def simulate_exposure(detector: DetectorModel, geometry: DetectorGeometry, stars: FieldCatalog, *,
                      sky: float, optical_element: str, table: MaTable, exposure_id: ExposureId,
                      start_time: Time, seed: list[int], out_dir: str | Path,
                      visit: dict | None = None, program: dict | None = None,
                      effects: Sequence[RampEffect] = (), cosmic_ray_flux: float = 0.0,
                      recorded_pointing: Pointing | None = None, pointing_error: dict | None = None,
                      psf: str = "gaussian", workers: int | None = None) -> tuple[Path, Path]:
    """Simulate one exposure of one detector; write its uncal and truth files below ``out_dir``.

    ``geometry`` holds the TRUE attitude, which places the stars (at their positions
    of ``start_time``); ``recorded_pointing`` is the attitude written into the file
    (default: the true one) and ``pointing_error`` its description for the truth.
    Imaging filters get the filter's flat and photometry; spectral elements (GRISM,
    PRISM) a WFI_SPECTRAL exposure of short dispersed traces. ``visit`` and
    ``program`` are ``meta.visit`` and ``meta.program`` values to set;
    ``cosmic_ray_flux`` (per cm^2 per s) adds cosmic rays, recorded in the truth.
    """
    out_dir = Path(out_dir)
    optical_element = optical_element.upper()
    spectral = optical_element in SPECTRAL_ELEMENTS
    epoch = Time(start_time, format="isot", scale="utc").jyear
    ra, dec = stars.at_epoch(epoch)
    x, y = geometry.sky_to_pixel(ra, dec)
    psf_element = DISPERSION_PSF_FILTER if spectral else optical_element
    reach = stamp_half_width(psf_element, "gaussian" if spectral else psf)
    if spectral:
        reach += DISPERSION_REACH
    nrows, ncols = detector.shape
    near = (x > -reach) & (x < ncols - 1 + reach) & (y > -reach) & (y < nrows - 1 + reach)
    catalog = Catalog(np.asarray(x)[near], np.asarray(y)[near], stars.flux[near])

    if spectral:
        fwhm = psf_fwhm_pixels(DISPERSION_PSF_FILTER)
        scene = render_rate(detector.shape, dispersed_catalog(catalog, *DISPERSION_PIXELS), sky, fwhm)
        psf_truth = {"model": "gaussian", "fwhm_pixels": fwhm}
    else:
        scene = render_stars(detector.shape, catalog, sky, optical_element, detector=detector.name, psf=psf)
        psf_truth = {"model": psf, **({"fwhm_pixels": psf_fwhm_pixels(optical_element)} if psf == "gaussian"
                                      else {})}
    flat = true_flat(detector, optical_element)
    rate = scene * flat

    rays = (CosmicRays.from_flux(cosmic_ray_flux, collecting=detector.photosensitive)
            if cosmic_ray_flux else None)
    science_effects = [*effects, rays] if rays else list(effects)
    ramp = simulate_ramp(detector.electron_rate(rate), detector.science_readout(), table, seed,
                         effects=science_effects, workers=workers)
    amp33 = simulate_ramp(np.zeros(detector.amp33_bias.shape), detector.amp33_readout(), table, seed,
                          effects=effects, workers=workers)
    recorded_pointing = recorded_pointing or geometry.pointing
    recorded = DetectorGeometry(geometry.detector, geometry.shape, recorded_pointing)
    wcsinfo_in_file = recorded.wcsinfo()
    model = make_level1(ramp.resultants, amp33.resultants, exposure_id=exposure_id, detector=detector.name,
                        optical_element=optical_element, table=table, start_time=start_time,
                        wcsinfo=wcsinfo_in_file, pointing=pointing_metadata(recorded_pointing),
                        visit=visit, program=program,
                        exposure_type=SPECTRAL_EXPOSURE_TYPE if spectral else IMAGING_EXPOSURE_TYPE)
    uncal_path = write_level1(model, out_dir / "uncal")
    name = exposure_id.name(detector.name)
    truth = ExposureTruth(
        exposure=name, optical_element=optical_element, table=table, seed=seed, sky=sky, psf=psf_truth,
        rate=rate, flat=flat, catalog=catalog, ra=ra[near], dec=dec[near], source_id=stars.source_id[near],
        detector=detector, first_saturated_resultant=ramp.first_saturated_resultant,
        wcsinfo=geometry.wcsinfo(), wcsinfo_in_file=wcsinfo_in_file,
        pointing_error=pointing_error or {"offset_arcsec": 0.0, "direction_deg": 0.0, "roll_deg": 0.0},
        exposure_type=SPECTRAL_EXPOSURE_TYPE if spectral else IMAGING_EXPOSURE_TYPE, epoch=epoch,
        photometry=None if spectral else {
            "nominal_gain_e_per_dn": float(detector.nominal_gain),
            "photmjsr": photmjsr(optical_element, detector.nominal_gain), "pixelareasr": PIXEL_AREA_SR},
        dispersion={"axis": "y", "first_pixel": DISPERSION_PIXELS[0], "last_pixel": DISPERSION_PIXELS[1]}
        if spectral else None,
        cosmic_rays={**rays.truth(), "ipc_fraction": rays.ipc_fraction} if rays else None,
    )
    truth_path = truth.write(out_dir / "truth" / f"{name}_truth.asdf")
    return uncal_path, truth_path


def simulate_campaign(config: CampaignConfig, out_dir: str | Path, *,
                      workers: int | None = None) -> CampaignOutputs:
    """Simulate every exposure of ``config`` into ``out_dir`` and make its references and CRDS cache."""
    out_dir = Path(out_dir)
    table = ma_table(config.ma_table)
    shape = (config.size, config.size)
    start = Time(config.start_time, format="isot", scale="utc")
    home = Pointing.at(**config.pointing)
    detectors = [build_detector(name, shape, config.seed) for name in config.detectors]
    responses = {det.name: nonlinear_response(det) for det in detectors}
    observations = config.observations()
    stars = sky_catalog(config, detectors, home, table)
    sky_catalog_path = _write_table(stars.table(), out_dir / "truth" / "sky_catalog.ecsv")
    gaia = gaia_like_table(stars, np.random.default_rng([config.seed, _SKY_STREAM, 1]),
                           faint_limit_g=config.gaia_faint_limit_g)
    gaia_path = _write_table(gaia, out_dir / "catalogs" / "gaia_like.ecsv")
    _write_table(gaia, out_dir / "catalogs" / "gaia_like.parquet")

    cache_dir = out_dir / "crds_cache"
    # The references are valid from the day before the campaign, so CRDS picks them for every exposure.
    day_before = (start - TimeDelta(1, format="jd")).strftime("%Y-%m-%dT00:00:00")
    useafter = Time(day_before, format="isot", scale="utc")
    elements = [element for element, _ in observations]
    references = [path for det in detectors
                  for path in write_references(det, out_dir / "references", useafter=useafter,
                                               optical_elements=elements,
                                               also_taken=[crds_cache.references_dir(cache_dir)])]
    references.append(write_darkdecaysignal(detectors, out_dir / "references", useafter=useafter,
                                            simulated=config.dark_decay_signal,
                                            also_taken=[crds_cache.references_dir(cache_dir)]))
    # Reference-pixel effects need the 32-output readout; smaller test arrays go without.
    with_refpix = fits_readout_layout(shape)

    uncal, truth, corners = [], [], []
    exposure_start = start
    for observation, (optical_element, dithers) in enumerate(observations, start=1):
        # One visit per observation; its dither offsets are recorded in the ideal frame (arcsec).
        pattern = [offset * NOMINAL_PIXEL_SCALE_ARCSEC for step in dithers for offset in step]
        dither = {"primary_name": None, "subpixel_name": "CUSTOM", "executed_pattern": pattern}
        visit = {"start_time": exposure_start, "nexposures": len(dithers), "dither": dither}
        for exposure, (dx, dy) in enumerate(dithers, start=1):
            exposure_id = ExposureId(program=config.program, observation=observation, exposure=exposure)
            pointing = home.dithered(dx, dy)
            error = pointing_error(config, observation, exposure)
            recorded = pointing.perturbed(error["offset_arcsec"], error["direction_deg"], error["roll_deg"])
            for det in detectors:
                corners.append(detector_corners(DetectorGeometry(det.name, shape, pointing)))
                began = time.perf_counter()
                seed = [config.seed, detector_key(det.name), observation, exposure]
                paths = simulate_exposure(
                    det, DetectorGeometry(det.name, shape, pointing), stars,
                    sky=config.sky_for(optical_element), optical_element=optical_element, table=table,
                    exposure_id=exposure_id, start_time=exposure_start, seed=seed,
                    out_dir=out_dir, visit=visit, program={"title": config.title},
                    effects=exposure_effects(det, responses[det.name], seed, with_refpix,
                                             DarkDecaySignal.of(det, table.frame_time)
                                             if config.dark_decay_signal else None),
                    cosmic_ray_flux=config.cosmic_ray_flux_per_cm2_s, recorded_pointing=recorded,
                    pointing_error=error, psf=config.psf, workers=workers)
                uncal.append(paths[0])
                truth.append(paths[1])
                log.info("simulated %s in %.1f s", paths[0].name, time.perf_counter() - began)
            exposure_start = exposure_start + TimeDelta(table.exposure_time + EXPOSURE_GAP_S, format="sec")

    references.append(write_skymap(config, corners, out_dir / "references", useafter,
                                   also_taken=[crds_cache.references_dir(cache_dir)]))
    context = crds_cache.deliver(cache_dir, references, description=f"wfisim campaign: {config.title}")
    workflow_config = out_dir / "workflow.yaml"
    # Relative paths: the workflow runs with --directory <out>.
    settings = {"inputs": {"uncal_dir": "uncal"}, "crds": {"path": "crds_cache"},
                # No network here: tweakreg aligns to the campaign's Gaia-like catalog.
                "tweakreg": {"abs_refcat": str(gaia_path.relative_to(out_dir))}}
    if not with_refpix:  # no REFPIX reference was made for these arrays
        settings["refpix"] = {"skip": True}
    if config.psf == "roman":
        # The stars are drawn with the Roman PSF: fitting it gives tweakreg ~0.02-pixel positions.
        settings["source_detection"] = {"fit_psf": True}
    workflow_config.write_text(yaml.safe_dump(settings, sort_keys=False))
    log.info("campaign: %d exposures, %d references, CRDS context %s", len(uncal), len(references), context)
    return CampaignOutputs(uncal, truth, references, context, workflow_config, gaia_path, sky_catalog_path)


# Sky around the simulated detectors that the sky map covers too: pointing errors, and room
# for exposures added to the campaign later nearby.
SKYMAP_MARGIN_DEG = 60.0 / 3600.0


def detector_corners(geometry: DetectorGeometry) -> np.ndarray:
    """RA, Dec (2 x 4, deg) of a detector's corners on the sky."""
    ny, nx = geometry.shape
    ra, dec = geometry.pixel_to_sky(np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]),
                                    np.array([-0.5, -0.5, ny - 0.5, ny - 0.5]))
    return np.array([np.asarray(ra) % 360.0, np.asarray(dec)])


def write_skymap(config: CampaignConfig, corners: list[np.ndarray], directory: Path, useafter: Time, *,
                 also_taken=()) -> Path:
    """The SKYCELLS reference of the box around every simulated detector (plus a margin)."""
    ra, dec = np.concatenate(corners, axis=1)
    margin_ra = SKYMAP_MARGIN_DEG / max(math.cos(math.radians(float(np.max(np.abs(dec))))), 1e-3)
    model = make_skycells((max(0.0, float(ra.min()) - margin_ra), min(360.0, float(ra.max()) + margin_ra)),
                          (max(-90.0, float(dec.min()) - SKYMAP_MARGIN_DEG),
                           min(90.0, float(dec.max()) + SKYMAP_MARGIN_DEG)),
                          tessellation=config.tessellation(), useafter=useafter)
    return write_atomic(model, next_reference_path(directory, "skycells", *also_taken))


def pointing_error(config: CampaignConfig, observation: int, exposure: int) -> dict:
    """The exposure's attitude error: configured magnitudes, random direction and roll sign."""
    rng = np.random.default_rng([config.seed, _POINTING_ERROR_STREAM, observation, exposure])
    direction = float(rng.uniform(0.0, 360.0))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return {"offset_arcsec": float(config.pointing_error["offset_arcsec"]), "direction_deg": direction,
            "roll_deg": sign * float(config.pointing_error["roll_deg"])}


def exposure_effects(detector: DetectorModel, response: RampEffect, seed: list[int],
                     with_refpix: bool, dark_decay: RampEffect | None = None) -> list[RampEffect]:
    """The per-read effects of one exposure: nonlinearity, the reference-pixel electronics, and
    the dark decay signal when simulated."""
    effects = [response]
    if with_refpix:
        effects.append(ReferencePixelEffects(readout_electronics(detector), seed))
    if dark_decay is not None:
        effects.append(dark_decay)
    return effects


def sky_catalog(config: CampaignConfig, detectors: Sequence[DetectorModel], home: Pointing,
                table: MaTable) -> FieldCatalog:
    """Stars around every detector, far enough out that every dither of every detector is covered.

    Per detector: ``config.stars`` per readout area, uniform over the readout grown by
    the largest dither plus the reach of the widest star stamp (or dispersed trace), and
    ``config.saturating_stars`` bright ones inside the light-sensitive area of every
    dither. Positions are drawn in the detector's pixels under the undithered true
    attitude and taken as the stars' positions at the reference epoch 2016.0.
    """
    reach = max((abs(offset) for step in config.dither_offsets() for offset in step), default=0.0)
    stamps = [stamp_half_width(name, config.psf) for name in config.filters]
    if config.spectral_exposures:
        stamps.append(stamp_half_width(DISPERSION_PSF_FILTER) + DISPERSION_REACH)
    margin = reach + max(stamps)
    # Bright stars saturate in every filter: size them for the widest PSF (the faintest peak).
    widest_psf = max(psf_fwhm_pixels(name) for name in config.filters) if config.filters else 1.5
    ra, dec, flux = [], [], []
    for det in detectors:
        full_well = float(np.median(det.full_well))
        bright = saturating_flux_range(full_well, table.exposure_time, widest_psf)
        rng = np.random.default_rng([config.seed, detector_key(det.name), _STARS_STREAM])
        nrows, ncols = det.shape
        grown = ((ncols - 1 + 2 * margin) * (nrows - 1 + 2 * margin)) / (ncols * nrows)
        count = round(config.stars * grown)
        inside = BORDER + 2 + reach
        n_bright = config.saturating_stars
        if n_bright and inside > min(nrows, ncols) - 1 - inside:
            raise ValueError(f"{n_bright} saturating star(s) cannot stay inside a {ncols} x {nrows} "
                             f"array dithered by up to {reach} pixels: use saturating_stars: 0")
        inside = min(inside, (min(nrows, ncols) - 1) / 2)  # no bright star to place: any valid range
        x = np.concatenate([rng.uniform(-margin, ncols - 1 + margin, count),
                            rng.uniform(inside, ncols - 1 - inside, n_bright)])
        y = np.concatenate([rng.uniform(-margin, nrows - 1 + margin, count),
                            rng.uniform(inside, nrows - 1 - inside, n_bright)])
        low, high = (math.log(limit) for limit in config.star_flux_e_per_s)
        bright_low, bright_high = (math.log(limit) for limit in bright)
        flux.append(np.exp(np.concatenate([rng.uniform(low, high, count),
                                           rng.uniform(bright_low, bright_high, n_bright)])))
        star_ra, star_dec = DetectorGeometry(det.name, det.shape, home).pixel_to_sky(x, y)
        ra.append(star_ra)
        dec.append(star_dec)
    rng = np.random.default_rng([config.seed, _SKY_STREAM])
    total = sum(len(values) for values in flux)
    sigma = config.proper_motion_mas_per_yr
    return FieldCatalog(np.concatenate(ra), np.concatenate(dec), np.concatenate(flux),
                        pmra=rng.normal(0.0, sigma, total), pmdec=rng.normal(0.0, sigma, total))


def _write_table(table: Table, path: Path) -> Path:
    """Write ``table`` (format from the suffix); ``path`` only ever holds a complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        table.write(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
