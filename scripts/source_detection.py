"""source_detection: find point sources with DAOStarFinder and attach their catalog for tweakreg.

Seed, "Source Detection": a 2-D background (photutils Background2D: ``bkg_boxsize``,
``bkg_filter_size``, ``bkg_sigma``-clipped ``bkg_estimator``) is subtracted, and
DAOStarFinder (Stetson 1987) finds sources above ``scalar_threshold`` or, with
``calc_scalar_threshold``, above the median of the threshold image background +
``snr_threshold`` x background RMS, within the ``sharplo``..``sharphi`` and
``roundlo``..``roundhi`` bounds and at most ``peakmax`` at the peak; ``max_sources``
keeps the brightest. Pixels flagged DO_NOT_USE, and NaN pixels, take no part: they
are set to the background, so they neither make nor hide a source, and no source may
peak on one. No source may peak on a JUMP_DET pixel either (its value is kept): ramp
fitting leaves a cosmic ray's hit pixel a residual of several sigma, star-like to
DAOStarFinder at Roman's sampling (423 of 599 detections on a romanisim exposure), while
a star loses its detection only when a cosmic ray hits its brightest pixel (0.08 % of
the pixels of a 6-resultant exposure are JUMP_DET). romancal 1.1's source catalog avoids
the residuals by asking for 25 connected pixels, which also drops faint stars (36
sources on that exposure, where DAOStarFinder finds 171 stars). With ``fit_psf`` a Roman
PSF (see below) is fitted to every detection (all at once: the fit of photutils'
PSFPhotometry, see :func:`fit_psf_photometry`) and the fitted x, y and flux replace
DAOStarFinder's.

The computed threshold is the romancal documentation's (section "Source Detection") and
romancal's ("based on the background level", "the SNR for the threshold image").
DAOStarFinder compares a threshold with the background-free amplitude of its zero-sum
kernel, so this one asks for snr_threshold + background/RMS standard deviations, about 15
for 1 DN/s of sky at 0.08 DN/s RMS. That suits tweakreg: on a 4088 x 4088 image with 2000
stars, snr_threshold x RMS alone (3 sigma) gives 53 000 detections, 51 000 of them noise;
this threshold 2 002.

The catalog (``id``, ``x``, ``y`` 0-based, ``flux`` in data units summed over the
source, ``sharpness``, ``roundness1``, ``roundness2``; with ``fit_psf`` also
``x_init``, ``y_init``, ``flux_init`` (DAOStarFinder's), ``x_err``, ``y_err``,
``flux_err``, ``qfit``, ``cfit`` and photutils' ``psf_flags``) is attached as a numpy
structured array in ``meta.source_catalog.tweakreg_catalog``, where tweakreg reads
it. ``save_catalogs`` also writes it beside the output as ``<base>_cat.ecsv`` or
``<base>_cat.asdf`` (``output_cat_filetype``) and records that file name (relative
to the product's folder) in ``meta.source_catalog.tweakreg_catalog_name``. The
ASDF file is rad's ImageSourceCatalogModel, so that roman_datamodels opens it:
the catalog's own columns plus the schema's, filled where this step measures them
(label, x/y_centroid, sharpness, roundness1, image_flags, ra/dec when the image
has a WCS) and NaN, -1 or False elsewhere.

``kernel_fwhm`` defaults to the filter's diffraction FWHM, 1.03 lambda/D for
Roman's D = 2.36 m at the filter's pivot wavelength in 0.11"/pixel, combined in
quadrature with the one-pixel width of the pixel response (DAOStarFinder looks at
pixel-sampled stars; romancal's default added the pixel in the same way):

    filter  F062  F087  F106  F129  F146  F158  F184  F213
    um      0.620 0.869 1.060 1.293 1.464 1.577 1.842 2.125
    diffr.  0.507 0.711 0.867 1.058 1.198 1.291 1.507 1.739  pixels
    kernel  1.121 1.227 1.324 1.456 1.561 1.633 1.809 2.006  pixels

The PSF for ``fit_psf`` is an effective PSF: the Roman PSF at the detector's centre
(meta.instrument.detector WFInn -> SCA nn) in the filter, integrated over the
0.11" pixel and sampled 4x finer over 41 x 41 pixels. It comes from stpsf when
that is installed with its data (``STPSF_PATH``); otherwise from galsim.roman
(pupil_bin 8, a star of flat photon spectrum across galsim's bandpass of the
filter: F062->R062, F087->Z087, F106->Y106, F129->J129, F146->W146, F158->H158,
F184->F184, F213->K213). It is computed once per detector and filter in a process
and, when ``ROMANPIPE_PSF_CACHE`` names a folder (the workflow sets
``results/.cache/psf``), kept there as a ``.npy`` file named by everything it depends
on (detector, filter, source and its version, oversampling, stamp, pupil sampling), so
a campaign builds it once per detector and filter: 3-6 s saved in every later job.
Its origin is the optical model's (galsim's ``drawImage(center=...)``, where romanisim
places a star and on which romancal's ePSF is centred): a fitted x, y is where that
origin lies. The light centroid (first moment) of the Roman PSF is ~0.1 pixel (11-15
mas) from it, and DAOStarFinder's positions, which follow the core, are within a few
thousandths of a pixel of it.

    python scripts/source_detection.py r..._photom.asdf r..._sourcedetection.asdf \\
        [--fit-psf true] [--save-catalogs true --output-cat-filetype ecsv]
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from romanpipe import cli, dqflags
from romanpipe.background import estimate_background
from romanpipe.errors import NoScienceDataError, ParameterError
from romanpipe.files import atomic_path
from romanpipe.naming import product_name
from romanpipe.products import COMPLETE, derived_model, plain_array, write_atomic
from romanpipe.roman_psf import fit_psf_photometry, kernel_and_psf
from romanpipe.steprun import StepRun, run_script

import numpy as np
from astropy.table import Table
from photutils.detection import DAOStarFinder
from photutils.utils.exceptions import NoDetectionsWarning
from roman_datamodels import datamodels

log = logging.getLogger("source_detection")

STEP = "source_detection"
INPUT_MODELS = (datamodels.ImageModel,)

GOOD_PIXELS = "~DO_NOT_USE"  # DQ bit spec of the pixels that take part (romanpipe.dqflags)
NO_PEAK_BITS = "JUMP_DET"  # a source may not peak on these pixels (cosmic-ray residuals)
# A source fainter than this many times the PSF envelope of a source above peakmax is its halo
# (in_halo). Measured as flux / (F (fwhm / d)^3): rings and spikes of galsim's Roman PSF around
# stars of 7,000-240,000 flux came out as sources at 1.0-2.5 (6-22 pixels away); stars of 1/1000 of
# such a star 26 pixels away at 3.9 (and of 1/100, 39).
HALO_FACTOR = 3.0
DAO_COLUMNS = ("id", "x", "y", "flux", "sharpness", "roundness1", "roundness2")
FIT_COLUMNS = ("x_init", "y_init", "flux_init", "x_err", "y_err", "flux_err", "qfit", "cfit", "psf_flags")


def unusable_pixels(data, dq) -> np.ndarray:
    """True where a pixel is flagged DO_NOT_USE or has no finite value."""
    return ~dqflags.good_pixel_mask(dq, GOOD_PIXELS) | ~np.isfinite(data)


def cosmic_ray_pixels(dq) -> np.ndarray:
    """True where ramp fitting found a jump: a cosmic ray's residual may sit there."""
    return ~dqflags.good_pixel_mask(dq, f"~{NO_PEAK_BITS}")


def find_sources(data, err, dq, *, kernel_fwhm, sharplo=0.0, sharphi=1.0, roundlo=-1.0, roundhi=1.0,
                 peakmax=1000.0, max_sources=None, scalar_threshold=None, calc_scalar_threshold=True,
                 snr_threshold=3.0, bkg_estimator="median", bkg_boxsize=9, bkg_sigma=2.0, bkg_filter_size=3,
                 psf_model=None) -> Table:
    """The source catalog of a rate image (columns: see the module docstring). Inputs are not modified.

    data, err, dq (ny, nx); ``psf_model`` (a photutils PSF model, e.g. :func:`roman_psf_model`)
    turns on PSF fitting. ValueError if every pixel is unusable.
    """
    if scalar_threshold is None and not calc_scalar_threshold:
        raise ValueError("one of scalar_threshold or calc_scalar_threshold must be chosen")
    data = np.asarray(data, dtype=np.float64)
    bad = unusable_pixels(data, dq)
    if bad.all():
        raise ValueError("every pixel is flagged DO_NOT_USE or not finite")
    background = estimate_background(np.where(bad, 0.0, data), bad, bkg_boxsize=bkg_boxsize,
                                     bkg_filter_size=bkg_filter_size, bkg_sigma=bkg_sigma,
                                     bkg_estimator=bkg_estimator)
    # Background2D interpolates its mesh again at every access to these two images.
    level, rms = background.background, background.background_rms
    subtracted = np.where(bad, 0.0, data - level)
    if scalar_threshold is not None:
        threshold = float(scalar_threshold)
    else:
        # The documented threshold image and its median (romancal's definition): see the module docstring.
        threshold = float(np.median(level + snr_threshold * rms))
    log.info("background median %.4g, RMS %.4g; detection threshold %.4g, kernel FWHM %.3f pixels",
             float(background.background_median), float(background.background_rms_median), threshold,
             kernel_fwhm)

    # peakmax and max_sources are applied below, after the halo rule that needs the dropped sources.
    finder = DAOStarFinder(threshold, kernel_fwhm, sharpness_range=(sharplo, sharphi),
                           roundness_range=(roundlo, roundhi))
    with warnings.catch_warnings():
        # An empty field is a result, reported below, not a warning.
        warnings.simplefilter("ignore", NoDetectionsWarning)
        found = finder(subtracted, mask=bad | cosmic_ray_pixels(dq))
    if found is not None:
        found = drop_bright_sources_and_their_halos(found, peakmax, kernel_fwhm, max_sources)
    if found is None or len(found) == 0:
        log.warning("no sources detected")
        return empty_catalog(psf_model is not None)
    catalog = Table({"id": np.arange(1, len(found) + 1, dtype=np.int64),
                     "x": np.asarray(found["x_centroid"], dtype=np.float64),
                     "y": np.asarray(found["y_centroid"], dtype=np.float64),
                     "flux": np.asarray(found["flux"], dtype=np.float64),
                     **{name: np.asarray(found[name], dtype=np.float64)
                        for name in ("sharpness", "roundness1", "roundness2")}})
    log.info("DAOStarFinder: %d sources", len(catalog))
    if psf_model is None:
        return catalog
    error = np.asarray(err, dtype=np.float64)
    fit_mask = bad | ~np.isfinite(error) | (error <= 0)
    return fit_psf_photometry(subtracted, np.where(fit_mask, 1.0, error), fit_mask, catalog, psf_model)


def in_halo(x, y, flux, bright_x, bright_y, bright_flux, fwhm) -> np.ndarray:
    """True where a source is fainter than HALO_FACTOR x (fwhm / d)^3 of the flux of a bright
    source at distance d: the far wing of a diffraction-limited PSF falls as d^-3, and there a
    saturated star's rings and strut spikes are brighter than faint stars."""
    x, y, flux = (np.asarray(value, np.float64)[:, None] for value in (x, y, flux))
    distance = np.hypot(x - np.asarray(bright_x, np.float64), y - np.asarray(bright_y, np.float64))
    # Within one FWHM of a bright source a fainter one is part of it: the envelope stops at 1.
    wing = HALO_FACTOR * np.asarray(bright_flux, np.float64) * (fwhm / np.maximum(distance, fwhm)) ** 3
    return (flux < wing).any(axis=1)


def drop_bright_sources_and_their_halos(found: Table, peakmax, fwhm, max_sources) -> Table:
    """DAOStarFinder's sources less those peaking above ``peakmax`` and those in their halos
    (:func:`in_halo`), then the ``max_sources`` brightest by flux (photutils' ``n_brightest``)."""
    peak, flux = np.asarray(found["peak"], np.float64), np.asarray(found["flux"], np.float64)
    too_bright = peak > peakmax if peakmax is not None else np.zeros(len(found), bool)
    keep = ~too_bright
    if too_bright.any():
        x, y = np.asarray(found["x_centroid"]), np.asarray(found["y_centroid"])
        halo = keep & in_halo(x, y, flux, x[too_bright], y[too_bright], flux[too_bright], fwhm)
        if halo.any():
            log.info("%d sources in the halos of %d sources above peakmax dropped", int(halo.sum()),
                     int(too_bright.sum()))
        keep &= ~halo
    found = found[keep]
    if max_sources is not None and len(found) > max_sources:
        found = found[np.argsort(np.asarray(found["flux"]))[::-1][:max_sources]]
    return found


def empty_catalog(with_fit: bool) -> Table:
    names = DAO_COLUMNS + (FIT_COLUMNS if with_fit else ())
    dtypes = [np.int64 if name == "id" else np.int32 if name == "psf_flags" else np.float64 for name in names]
    return Table(names=names, dtype=dtypes)


def catalog_product(image, catalog: Table, image_name: str):
    """rad's ImageSourceCatalogModel holding ``catalog``: its columns plus the schema's."""
    product = derived_model(datamodels.ImageSourceCatalogModel, image, image_name)
    template = datamodels.ImageSourceCatalogModel.create_fake_data()
    product.source_catalog = _schema_table(template.source_catalog, image, catalog)
    return product


def _schema_table(template: Table, image, catalog: Table) -> Table:
    """The schema's columns: measured here where this step measures them, else NaN, -1 or False."""
    n = len(catalog)
    table = Table()
    for name in template.colnames:
        column = template[name]
        kind = column.dtype.kind
        fill = np.nan if kind == "f" else False if kind == "b" else -1
        table[name] = column.__class__(np.full(n, fill, dtype=column.dtype), unit=column.unit,
                                       description=column.description)
    x_dao = catalog["x_init"] if "x_init" in catalog.colnames else catalog["x"]
    y_dao = catalog["y_init"] if "y_init" in catalog.colnames else catalog["y"]
    dq = plain_array(image.dq)
    rows = np.clip(np.rint(catalog["y"]).astype(int), 0, dq.shape[0] - 1)
    cols = np.clip(np.rint(catalog["x"]).astype(int), 0, dq.shape[1] - 1)
    # In place, so that the schema's dtypes, units and descriptions stay.
    table["label"][:] = catalog["id"]
    table["x_centroid"][:] = x_dao
    table["y_centroid"][:] = y_dao
    table["sharpness"][:] = catalog["sharpness"]
    table["roundness1"][:] = catalog["roundness1"]
    table["warning_flags"][:] = 0
    table["image_flags"][:] = dq[rows, cols]
    wcs = image.meta.get("wcs")
    if wcs is not None and n:
        table["ra"][:], table["dec"][:] = wcs(np.asarray(catalog["x"]), np.asarray(catalog["y"]))
        table["ra_centroid"][:], table["dec_centroid"][:] = wcs(np.asarray(x_dao), np.asarray(y_dao))
    for name in catalog.colnames:
        if name not in table.colnames:
            table[name] = catalog[name]
    return table


def catalog_path(output: Path, filetype: str) -> Path:
    """``<base>_cat.<asdf|ecsv>`` beside the output."""
    return product_name(output, "cat").with_suffix(f".{filetype}")


def write_catalog(image, catalog: Table, path: Path, image_name: str) -> Path:
    """Write the catalog file so that ``path`` only ever holds a complete catalog."""
    if path.suffix == ".asdf":
        return write_atomic(catalog_product(image, catalog, image_name), path)
    with atomic_path(path) as staging:
        catalog.write(staging, format="ascii.ecsv")
    log.info("wrote %s", path)
    return path


def attach_catalog(image, catalog: Table, catalog_name: str | None) -> None:
    """Put the catalog where tweakreg reads it (rad's meta.source_catalog)."""
    source_catalog = {"tweakreg_catalog": np.asarray(catalog.as_array())}
    if catalog_name is not None:
        source_catalog["tweakreg_catalog_name"] = catalog_name
    image.meta["source_catalog"] = source_catalog


def run(image, step: StepRun):
    """``image`` (an ImageModel, updated and returned) with its catalog of point sources;
    ``save_catalogs`` also writes the catalog beside ``step.output``."""
    parameters = step.parameters
    settings = {name: parameters[name] for name in (
        "sharplo", "sharphi", "roundlo", "roundhi", "peakmax", "max_sources", "scalar_threshold",
        "calc_scalar_threshold", "snr_threshold", "bkg_estimator", "bkg_boxsize", "bkg_sigma",
        "bkg_filter_size")}
    if settings["scalar_threshold"] is None and not settings["calc_scalar_threshold"]:
        raise ParameterError(f"{STEP}: one of scalar_threshold or calc_scalar_threshold must be chosen")
    data, err, dq = (plain_array(image[name]) for name in ("data", "err", "dq"))
    if data.ndim != 2 or 0 in data.shape or unusable_pixels(data, dq).all():
        raise NoScienceDataError(f"{step.input}: no usable pixel in data of shape {data.shape} "
                                 "(all DO_NOT_USE or not finite)")
    kernel_fwhm, psf_model = kernel_and_psf(image.meta.instrument, parameters["kernel_fwhm"],
                                            parameters["fit_psf"], step.input)
    catalog = find_sources(data, err, dq, kernel_fwhm=kernel_fwhm, psf_model=psf_model, **settings)
    catalog_name = None
    if parameters["save_catalogs"]:
        path = catalog_path(step.output, parameters["output_cat_filetype"])
        catalog_name = write_catalog(image, catalog, path, step.output.name).name
    # The product is the input plus its catalog: the script writes it from the open
    # (memory-mapped) model, not from a copy of its arrays.
    attach_catalog(image, catalog, catalog_name)
    return image, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
