"""multiband_catalog: one catalog of a sky cell's sources in all its filters (forced photometry).

As romancal 1.1's MultibandCatalogStep (read in its source: the romancal documentation has
no section on it), on photutils and source_catalog's functions, with source_catalog's
parameters (one definition of how sources are found and measured):

1. Each filter's mosaic of the cell (the cell's grid: pixel-aligned, checked): background
   and its RMS, subtracted (source_catalog's step 1).
2. Detection image: the filters' background-subtracted mosaics averaged with
   inverse-variance weights, a pixel's weight in a filter 1 / its background RMS^2 (the
   noise without the sources' own, as romancal's weights by the read-noise variance),
   then segmented as source_catalog's steps 1-3 (kernel: the largest of the filters'
   ``kernel_fwhm``). A pixel usable in no filter is no part of a source.
3. Forced photometry: in every filter, source_catalog's steps 4-8 on the same segments:
   centroids and shapes from the detection image, fluxes (apertures corrected by the
   filter's encircled energy, Kron, segment, the fit of the filter's mosaic PSF) from the
   filter's own mosaic.
4. One row per source: the detection's columns (romancal's "dr_det" catalog: label,
   positions, segment, shape, neighbours; ``warning_flags`` and ``image_flags`` OR-ed over
   the filters), then each filter's in order of wavelength, the filter in their names as
   romancal names them (``aper04_f158_flux``, ``psf_f158_flux``, ``x_psf_f158``,
   ``kron_f158_abmag``, ``is_extended_f158``: its "dr_band" columns). Written as rad's
   MultibandSourceCatalogModel (``<base>_cat.parquet``) and MultibandSegmentationMapModel
   (``<base>_segm.asdf``); the table's ``ee_fractions`` hold each filter's.

Not done (romancal 1.1 does): PSF matching of the bluer filters to the reddest (its
``..._f087m_...`` columns), source injection, several detection kernels.

    python scripts/multiband_catalog.py r..._f087_i2d.asdf r..._f158_i2d.asdf --output r..._cat.parquet
"""

from __future__ import annotations

import argparse
import copy
import logging
from dataclasses import dataclass
from pathlib import Path

from romanpipe import catalogs, cli
from romanpipe import params as step_params
from romanpipe.errors import InputFileError, NoScienceDataError
from romanpipe.products import derived_model, open_model, write_atomic
from romanpipe.roman_psf import PIVOT_WAVELENGTH_UM, encircled_energy
from romanpipe.steprun import StepRun, record_provenance
from romanpipe.timing import PhaseTimer

import numpy as np
from astropy.table import Table
from roman_datamodels import datamodels

log = logging.getLogger("multiband_catalog")

STEP = "source_catalog"  # its parameters: see the module docstring
GRID_TOLERANCE_PIXELS = 1e-3

# Columns romancal names by appending the filter; others take it before "_flux", "_abmag" or after "_psf".
APPENDED = ("sharpness", "roundness1", "is_extended", "fluxfrac_radius_50", "psf_gof", "psf_flags")


def band_columns(fit_psf: bool) -> list[str]:
    """romancal 1.1's "dr_band" columns (without the label), in its order, before the filter is named."""
    psf = (*catalogs.PSF_XY_COLUMNS, *catalogs.PSF_SKY_COLUMNS, *catalogs.PSF_FLAG_COLUMNS) if fit_psf else ()
    fluxes = [name for name in catalogs.catalog_columns(fit_psf)
              if name.startswith("aper") or name.endswith(("_flux", "_flux_err", "_abmag", "_abmag_err"))]
    return [*psf, "sharpness", "roundness1", "is_extended", "fluxfrac_radius_50", *fluxes]


def detection_columns() -> list[str]:
    """romancal 1.1's "dr_det" columns, in its order: its single-image ("prompt") columns less
    the band columns."""
    return [name for name in catalogs.catalog_columns(fit_psf=False) if name not in band_columns(False)]


def band_column_name(name: str, optical_element: str) -> str:
    """A band column's name in the multiband catalog (romancal's add_filter_to_colnames)."""
    band = optical_element.lower()
    if name in APPENDED:
        return f"{name}_{band}"
    for marker, before in (("_flux", True), ("_psf", False), ("_abmag", True)):
        at = name.find(marker)
        if at != -1:
            at = at if before else at + len(marker)
            return f"{name[:at]}_{band}{name[at:]}"
    return f"{name}_{band}"


def wavelength_order(optical_elements) -> list[str]:
    return sorted(optical_elements, key=lambda element: PIVOT_WAVELENGTH_UM.get(element.upper(), np.inf))


def detection_image(subtracted, background_rms, masks) -> tuple[np.ndarray, np.ndarray]:
    """Step 2's inverse-variance-weighted mean of the filters' subtracted images, and its mask
    (True where no filter has a usable pixel)."""
    weights = [np.where(mask, 0.0, 1.0 / np.square(rms))
               for rms, mask in zip(background_rms, masks, strict=True)]
    total = np.sum(weights, axis=0)
    combined = np.sum([w * np.where(mask, 0.0, image) for w, image, mask in
                       zip(weights, subtracted, masks, strict=True)], axis=0)
    unusable = ~(total > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(unusable, 0.0, combined / total), unusable


@dataclass(frozen=True)
class FilterImage:
    """One filter's mosaic as step 1 leaves it: its background (subtracted image, RMS), its errors,
    DQ and unusable pixels, its kernel FWHM and effective PSF."""

    background: catalogs.Background
    err: np.ndarray
    dq: np.ndarray
    mask: np.ndarray
    kernel_fwhm: float
    psf_model: object


def check_same_grid(models, names) -> None:
    """The mosaics must be on one pixel grid (a sky cell's): same shape, same sky at the corners."""
    shape = models[0].data.shape
    ny, nx = shape
    corners = (np.array([0.0, nx - 1.0, 0.0, nx - 1.0]), np.array([0.0, 0.0, ny - 1.0, ny - 1.0]))
    sky = models[0].meta.wcs(*corners, with_bounding_box=False)
    for model, name in zip(models[1:], names[1:], strict=True):
        if model.data.shape != shape:
            raise InputFileError(name, f"shape {model.data.shape}, not {names[0].name}'s {shape}: "
                                       "a multiband catalog needs mosaics on one grid")
        x, y = model.meta.wcs.invert(*sky, with_bounding_box=False)
        if np.max(np.hypot(x - corners[0], y - corners[1])) > GRID_TOLERANCE_PIXELS:
            raise InputFileError(name, f"not on {names[0].name}'s pixel grid: a multiband catalog needs "
                                       "mosaics of one sky cell")


def multiband_catalog(models, names, parameters, reference=None) -> tuple[Table, object, dict, float]:
    """Steps 1-4 of the module docstring on open MosaicModels: the table (schema columns not yet
    applied), the detection (romanpipe.catalogs.Detection), the filters' ee_fractions (lower-case
    filter -> fractions, in order of wavelength) and the detection kernel's FWHM."""
    elements = [str(model.meta.instrument.optical_element) for model in models]
    if len(set(elements)) != len(elements):
        raise InputFileError(names[0], f"optical elements {elements}: one mosaic per filter")
    check_same_grid(models, names)
    settings = {key: parameters[key] for key in ("snr_threshold", "npixels", "deblend", "bkg_boxsize")}
    scale = catalogs.image_scale(models[0].meta.wcs, models[0].data.shape)
    per_filter = {}
    for model, name, element in zip(models, names, elements, strict=True):
        data, err, dq = catalogs.image_arrays(model)
        mask = catalogs.unusable_pixels(data, err, dq)
        if mask.all():
            raise NoScienceDataError(f"{name}: no usable pixel")
        kernel_fwhm, psf_model = catalogs.mosaic_psf(model, parameters, name, reference)
        # Only the background: the filter's segments are the common detection's (step 3).
        background = catalogs.subtract_background(data, mask, kernel_fwhm=kernel_fwhm, **settings)
        per_filter[element] = FilterImage(background, err, dq, mask, kernel_fwhm, psf_model)

    images = list(per_filter.values())
    combined, unusable = detection_image([image.background.subtracted for image in images],
                                         [image.background.rms for image in images],
                                         [image.mask for image in images])
    kernel_fwhm = max(image.kernel_fwhm for image in images)
    log.info("detection image of %s, kernel FWHM %.3f pixels", ", ".join(per_filter), kernel_fwhm)
    common = catalogs.detect(combined, unusable, kernel_fwhm=kernel_fwhm, **settings)
    radii = [r / scale.pixel_scale_arcsec for r in catalogs.APERTURE_RADII_ARCSEC]
    ee_fractions = {element.lower(): encircled_energy(per_filter[element].psf_model, radii)
                    for element in wavelength_order(per_filter)}
    if common.segments is None:
        log.warning("no sources detected")
        return Table(), common, ee_fractions, kernel_fwhm

    out = None
    for element in wavelength_order(per_filter):
        image = per_filter[element]
        forced = catalogs.Detection(image.background.subtracted, common.detection_image, common.segments)
        measured = catalogs.measure(
            forced, image.err, image.dq, image.mask, scale=scale,
            flux_to_njy=catalogs.flux_conversion(None, scale, surface_brightness=True),
            ee_fractions=ee_fractions[element.lower()],
            psf_model=image.psf_model if parameters["fit_psf"] else None)
        catalogs.add_sky_coordinates(measured, models[0].meta.wcs, parameters["fit_psf"])
        if out is None:
            out = Table({name: measured[name] for name in detection_columns() if name in measured.colnames})
            catalogs.add_sky_coordinates(out, models[0].meta.wcs, fit_psf=False)  # ra, dec: the centroid's
        else:
            for name in ("warning_flags", "image_flags"):
                out[name] = np.bitwise_or(out[name], measured[name])
        for name in band_columns(parameters["fit_psf"]):
            if name in measured.colnames:
                out[band_column_name(name, element)] = measured[name]
    return out, common, ee_fractions, kernel_fwhm


def catalog_columns(elements, fit_psf: bool) -> list[str]:
    """The multiband catalog's columns: the detection's, then each filter's in order of wavelength."""
    return detection_columns() + [band_column_name(name, element) for element in wavelength_order(elements)
                                  for name in band_columns(fit_psf)]


def image_metas(models) -> list[dict]:
    """Each mosaic's metadata but its WCS and input table, as romancal's ``meta.image_metas``."""
    return [{key: copy.deepcopy(value) for key, value in model.meta.items()
             if key not in ("wcs", "individual_image_meta")} for model in models]


def run(models, names, parameters, output: Path, reference=None) -> tuple:
    """The catalog and segmentation models (rad's Multiband*) of open MosaicModels of one cell."""
    table, detection, ee_fractions, kernel_fwhm = multiband_catalog(models, names, parameters, reference)
    elements = [str(model.meta.instrument.optical_element) for model in models]
    catalog_model, segmentation = (derived_model(model_class, models[0], output.name) for model_class in (
        datamodels.MultibandSourceCatalogModel, datamodels.MultibandSegmentationMapModel))
    for model in (catalog_model, segmentation):
        model.meta["image_metas"] = image_metas(models)
        model.meta["psf_match_reference_filter"] = "NOT_CONFIGURED"  # no PSF matching (docstring)
        model.meta.instrument.optical_element = None  # several: romancal blends what differs to None
    schema = catalogs.schema_table(table, catalog_columns(elements, parameters["fit_psf"]), catalog_model)
    scale = catalogs.image_scale(models[0].meta.wcs, models[0].data.shape)
    schema.meta.update(catalogs.catalog_meta([], scale, kernel_fwhm))
    # One set of aperture corrections per filter (romancal's multiband ee_fractions).
    schema.meta["ee_fractions"] = {element: np.asarray(value, np.float32)
                                   for element, value in ee_fractions.items()}
    catalog_model.source_catalog = schema
    segmentation.data = (np.zeros(models[0].data.shape, np.uint32) if detection.segments is None
                         else detection.segments.data.astype(np.uint32))
    segmentation["detection_image"] = detection.detection_image  # float32: rad's dtype
    log.info("%d sources in %s", len(schema), ", ".join(wavelength_order(elements)))
    return catalog_model, segmentation


def parse_args(argv=None) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(prog="multiband_catalog.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("mosaics", type=Path, nargs="+", help="_i2d mosaics of one sky cell, one per filter")
    parser.add_argument("--output", type=Path, required=True,
                        help="the catalog, <base>_cat.parquet (the segmentation map: <base>_segm.asdf)")
    step_params.add_step_arguments(parser, STEP)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    return args, step_params.resolve_parameters(STEP, args)


def main(argv=None) -> None:
    args, parameters = parse_args(argv)
    if parameters["skip"]:
        log.info("source_catalog skipped: no multiband catalog of %s", ", ".join(map(str, args.mosaics)))
        return
    if len(args.mosaics) < 2:
        raise InputFileError(args.mosaics[0], "a multiband catalog needs the mosaics of two filters or more")
    catalog_path, segmentation_path = catalogs.output_paths(args.output)
    timer = PhaseTimer()
    with timer.phase("read"):
        models = [open_model(path, (datamodels.MosaicModel,)) for path in args.mosaics]
    try:
        step = StepRun("multiband_catalog", parameters, args.mosaics[0], catalog_path, models[0].meta)
        with timer.phase("step"):
            catalog_model, segmentation = run(models, args.mosaics, parameters, catalog_path, step.reference)
        with timer.phase("provenance"):
            for model in (catalog_model, segmentation):
                record_provenance(model, "multiband_catalog", parameters, step.references)
        with timer.phase("write"):
            write_atomic(segmentation, segmentation_path)
            catalogs.write_parquet(catalog_model, catalog_path)
    finally:
        for model in models:
            model.close()
    timer.log("multiband_catalog")


if __name__ == "__main__":
    cli.run_and_exit(main)
