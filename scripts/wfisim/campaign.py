"""A simulated observing campaign: Level 1 exposures, their truth, references and a CRDS cache.

One sky field per detector is observed in every filter with a few small
dithers; all detectors expose together. Output folder layout::

    <out>/uncal/<expo>_uncal.asdf       Level 1 exposures
    <out>/truth/<expo>_truth.asdf       what was simulated (see wfisim.truth)
    <out>/references/roman_wfi_*.asdf   MASK, SATURATION, GAIN, READNOISE per detector
    <out>/crds_cache/                   offline CRDS cache holding those references
    <out>/workflow.yaml                 Snakemake config for ``--directory <out>``
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml
from astropy.time import Time, TimeDelta

from romanpipe import crds_cache

from .cosmic_rays import CosmicRays
from .detector import DetectorModel, build_detector, detector_key
from .level1 import ExposureId, make_level1, write_level1
from .matables import MaTable, ma_table
from .nonlinearity import nonlinear_response
from .pointing import DetectorGeometry, Pointing, pointing_metadata
from .ramps import RampEffect, simulate_ramp
from .references import write_references
from .refpix_effects import ReferencePixelEffects, fits_readout_layout, readout_electronics
from .scene import (
    PIXEL_SCALE_ARCSEC,
    Catalog,
    psf_fwhm_pixels,
    random_catalog,
    render_rate,
    saturating_flux_range,
)
from .truth import ExposureTruth

log = logging.getLogger(__name__)

EXPOSURE_GAP_S = 30.0  # slew, settle and reset between exposures
_STARS_STREAM = 1  # keys the star catalog's random stream apart from the detector's


@dataclass(frozen=True)
class CampaignConfig:
    """What to simulate; the YAML keys are these field names."""

    detectors: list[str] = field(default_factory=lambda: ["WFI01"])
    filters: list[str] = field(default_factory=lambda: ["F158"])
    exposures_per_filter: int = 1
    dithers: list[list[float]] | None = None  # [dx, dy] pixels per exposure; None: default_dithers()
    size: int = 256  # rows = columns of the readout, reference border included
    ma_table: str = "IMG_UNEVEN_6"
    seed: int = 1
    stars: int = 40
    saturating_stars: int = 2
    star_flux_e_per_s: list[float] = field(default_factory=lambda: [20.0, 2.0e3])
    sky_e_per_s: float | dict[str, float] = 1.0
    start_time: str = "2027-03-01T00:00:00"
    pointing: dict[str, float] = field(default_factory=lambda: {"ra": 270.0, "dec": 66.0, "pa_v3": 0.0})
    program: int = 1
    title: str = "Simulated WFI imaging campaign"
    cosmic_ray_flux_per_cm2_s: float = 0.0  # about 5 at L2

    @classmethod
    def from_mapping(cls, values: dict) -> CampaignConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown campaign setting(s): {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        config = cls(**values)
        if config.dithers is not None and len(config.dithers) != config.exposures_per_filter:
            raise ValueError(f"{len(config.dithers)} dithers for "
                             f"{config.exposures_per_filter} exposures per filter")
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> CampaignConfig:
        with open(path) as stream:
            return cls.from_mapping(yaml.safe_load(stream) or {})

    def sky_for(self, optical_element: str) -> float:
        if isinstance(self.sky_e_per_s, dict):
            return float(self.sky_e_per_s[optical_element])
        return float(self.sky_e_per_s)

    def dither_offsets(self) -> list[tuple[float, float]]:
        if self.dithers is not None:
            return [(float(dx), float(dy)) for dx, dy in self.dithers]
        return default_dithers(self.exposures_per_filter)


def default_dithers(count: int) -> list[tuple[float, float]]:
    """Steps of a few pixels whose fractional parts visit the four half-pixel phases."""
    return [(3.0 * i + 0.5 * (i % 2), 2.0 * i + 0.5 * ((i // 2) % 2)) for i in range(count)]


@dataclass(frozen=True, eq=False)
class FieldCatalog:
    """Stars on the sky: positions (deg) and fluxes (e/s) in every filter."""

    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray


@dataclass(frozen=True)
class CampaignOutputs:
    uncal: list[Path]
    truth: list[Path]
    references: list[Path]
    crds_context: str
    workflow_config: Path


def simulate_exposure(detector: DetectorModel, geometry: DetectorGeometry, stars: FieldCatalog, *,
                      sky: float, optical_element: str, table: MaTable, exposure_id: ExposureId,
                      start_time: Time, seed: list[int], out_dir: str | Path,
                      visit: dict | None = None, program: dict | None = None,
                      effects: Sequence[RampEffect] = (), cosmic_ray_flux: float = 0.0,
                      workers: int | None = None) -> tuple[Path, Path]:
    """Simulate one exposure of one detector; write its uncal and truth files below ``out_dir``.

    ``visit`` and ``program`` are ``meta.visit`` and ``meta.program`` values to set;
    ``cosmic_ray_flux`` (per cm^2 per s) adds cosmic rays, recorded in the truth.
    """
    out_dir = Path(out_dir)
    x, y = geometry.sky_to_pixel(stars.ra, stars.dec)
    catalog = Catalog(np.asarray(x), np.asarray(y), stars.flux)
    fwhm = psf_fwhm_pixels(optical_element)
    rate = render_rate(detector.shape, catalog, sky, fwhm)

    rays = (CosmicRays.from_flux(cosmic_ray_flux, collecting=detector.photosensitive)
            if cosmic_ray_flux else None)
    science_effects = [*effects, rays] if rays else list(effects)
    ramp = simulate_ramp(detector.electron_rate(rate), detector.science_readout(), table, seed,
                         effects=science_effects, workers=workers)
    amp33 = simulate_ramp(np.zeros(detector.amp33_bias.shape), detector.amp33_readout(), table, seed,
                          effects=effects, workers=workers)
    wcsinfo = geometry.wcsinfo()
    model = make_level1(ramp.resultants, amp33.resultants, exposure_id=exposure_id, detector=detector.name,
                        optical_element=optical_element, table=table, start_time=start_time,
                        wcsinfo=wcsinfo, pointing=pointing_metadata(geometry.pointing),
                        visit=visit, program=program)
    uncal_path = write_level1(model, out_dir / "uncal")
    name = exposure_id.name(detector.name)
    truth = ExposureTruth(
        exposure=name, optical_element=optical_element, table=table, seed=seed, sky=sky,
        psf_fwhm_pixels=fwhm, rate=rate, catalog=catalog, ra=stars.ra, dec=stars.dec, detector=detector,
        first_saturated_resultant=ramp.first_saturated_resultant, wcsinfo=wcsinfo,
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
    stars = {det.name: _field_catalog(config, det, DetectorGeometry(det.name, shape, home), table)
             for det in detectors}

    cache_dir = out_dir / "crds_cache"
    # The references are valid from the day before the campaign, so CRDS picks them for every exposure.
    day_before = (start - TimeDelta(1, format="jd")).strftime("%Y-%m-%dT00:00:00")
    useafter = Time(day_before, format="isot", scale="utc")
    references = [path for det in detectors
                  for path in write_references(det, out_dir / "references", useafter=useafter,
                                               also_taken=[crds_cache.references_dir(cache_dir)])]
    # Reference-pixel effects need the 32-output readout; smaller test arrays go without.
    with_refpix = fits_readout_layout(shape)

    dithers = config.dither_offsets()
    # One visit per filter; its dither offsets are recorded in the ideal frame (arcsec).
    dither = {"primary_name": None, "subpixel_name": "CUSTOM",
              "executed_pattern": [offset * PIXEL_SCALE_ARCSEC for step in dithers for offset in step]}
    uncal, truth = [], []
    exposure_start = start
    for observation, optical_element in enumerate(config.filters, start=1):
        visit = {"start_time": exposure_start, "nexposures": len(dithers), "dither": dither}
        for exposure, (dx, dy) in enumerate(dithers, start=1):
            exposure_id = ExposureId(program=config.program, observation=observation, exposure=exposure)
            pointing = home.dithered(dx, dy)
            for det in detectors:
                began = time.perf_counter()
                seed = [config.seed, detector_key(det.name), observation, exposure]
                paths = simulate_exposure(
                    det, DetectorGeometry(det.name, shape, pointing), stars[det.name],
                    sky=config.sky_for(optical_element), optical_element=optical_element, table=table,
                    exposure_id=exposure_id, start_time=exposure_start, seed=seed,
                    out_dir=out_dir, visit=visit, program={"title": config.title},
                    effects=exposure_effects(det, responses[det.name], seed, with_refpix),
                    cosmic_ray_flux=config.cosmic_ray_flux_per_cm2_s, workers=workers)
                uncal.append(paths[0])
                truth.append(paths[1])
                log.info("simulated %s in %.1f s", paths[0].name, time.perf_counter() - began)
            exposure_start = exposure_start + TimeDelta(table.exposure_time + EXPOSURE_GAP_S, format="sec")

    context = crds_cache.deliver(cache_dir, references, description=f"wfisim campaign: {config.title}")
    workflow_config = out_dir / "workflow.yaml"
    # Relative paths: the workflow runs with --directory <out>.
    settings = {"inputs": {"uncal_dir": "uncal"}, "crds": {"path": "crds_cache"}}
    if not with_refpix:  # no REFPIX reference was made for these arrays
        settings["refpix"] = {"skip": True}
    workflow_config.write_text(yaml.safe_dump(settings, sort_keys=False))
    log.info("campaign: %d exposures, %d references, CRDS context %s", len(uncal), len(references), context)
    return CampaignOutputs(uncal, truth, references, context, workflow_config)


def exposure_effects(detector: DetectorModel, response: RampEffect, seed: list[int],
                     with_refpix: bool) -> list[RampEffect]:
    """The per-read effects of one exposure: nonlinearity, and the reference-pixel electronics."""
    if not with_refpix:
        return [response]
    return [response, ReferencePixelEffects(readout_electronics(detector), seed)]


def _field_catalog(config: CampaignConfig, detector: DetectorModel, geometry: DetectorGeometry,
                   table: MaTable) -> FieldCatalog:
    """Stars on the detector's patch of sky, placed in the pixels of the undithered pointing."""
    # Bright stars saturate in every filter: size them for the widest PSF (the faintest peak).
    widest_psf = max(psf_fwhm_pixels(name) for name in config.filters)
    bright = saturating_flux_range(float(np.median(detector.full_well)), table.exposure_time, widest_psf)
    catalog = random_catalog([config.seed, detector_key(detector.name), _STARS_STREAM], detector.shape,
                             config.stars, flux_range=tuple(config.star_flux_e_per_s),
                             n_bright=config.saturating_stars, bright_flux_range=bright)
    ra, dec = geometry.pixel_to_sky(catalog.x, catalog.y)
    return FieldCatalog(np.asarray(ra), np.asarray(dec), catalog.flux)

