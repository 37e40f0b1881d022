"""source_catalog: the catalog of an image's sources: segments, centroids, shapes, aperture, PSF photometry.

As romancal 1.1's SourceCatalogStep (read in its source: the romancal documentation has no
section on it), built on photutils (the kernels: romanpipe.catalogs), on a calibrated image
(Level 2, ImageModel) or a mosaic (Level 3, MosaicModel: see the last paragraph):

1. Background and its RMS: photutils Background2D in ``bkg_boxsize`` boxes (3-sigma
   clipped medians, the mesh median-filtered over 3 x 3 boxes; one box over the whole image
   when the mesh cannot be estimated), subtracted from the data. Twice: the second time
   without the pixels of the first pass's segments, dilated by an 11 x 11 box (romancal
   estimates it once, with the stars' wings in it: a bias of aperture fluxes).
2. Detection image: the background-subtracted data convolved with a normalised Gaussian
   of ``kernel_fwhm`` pixels (null: the filter's diffraction FWHM combined in quadrature
   with one pixel, the kernel of source_detection), ``ceil(3 FWHM)`` pixels wide (odd).
3. Segmentation: pixels of the detection image above ``snr_threshold`` x the background
   RMS, in groups of at least ``npixels`` connected pixels (8-connectivity); with
   ``deblend`` overlapping sources are split (photutils' multi-thresholding, 32 levels,
   contrast 1e-4, as romancal).
4. Per source (photutils SourceCatalog on the subtracted data, shapes and centroids from
   the detection image): centroids, windowed centroids, bounding box, area, moments
   (semimajor, semiminor, orientation, ellipticity, cxx/cxy/cyy, FWHM), Kron radius and
   flux, the radius holding half the Kron flux, the isophotal (segment) flux, and the
   nearest neighbour.
5. Circular aperture photometry at 0.1, 0.2, 0.4, 0.8 and 1.6 arcsec (``aperXX_flux``,
   XX in tenths of an arcsecond) and the local background as the 3-sigma-clipped median of
   a 2.4-2.8 arcsec annulus. The aperture corrections are the encircled energy of a point
   source within each radius, from the APCORR reference of the detector (its row for the
   image's optical element: ``ee_fractions`` at ``ee_radii`` pixels, through a cubic spline
   as romancal; the simulator's reference factory makes it from its EPSF reference). The
   table's ``meta.ee_fractions`` holds them, and aperXX_flux / ee_fraction is a point
   source's total flux. As romancal, the fluxes themselves are not corrected. The
   apertures are centred on the PSF position where its fit converged, else on the
   windowed centroid. ``is_extended`` is romancal's test, aper04 > 1.2 x aper02 x
   EE(0.4")/EE(0.2").
6. With ``fit_psf`` (done before 5, whose apertures it centres: see photometry_positions):
   flux and position of the EPSF reference's effective PSF (its first: in focus, first
   spectral type, first position) fitted to every source at once (5 x 5
   pixels around its centroid, weighted by 1/err^2, romanpipe.roman_psf
   .fit_psf_photometry) -> ``x_psf``, ``y_psf``, ``psf_flux`` (the total flux), their
   errors, ``psf_gof`` (sum of |residuals| / flux) and ``psf_flags`` (photutils' bits).
   Positions are those of the PSF's origin, where the simulator and romancal place a star.
7. Fluxes in nJy: DN/s x meta.photometry.conversion_megajanskys (MJy/sr per DN/s) x
   meta.photometry.pixel_area (sr) x 1e15 (as romancal; an image without photometry is
   left in its own units, then nJy is its unit times the pixel area), AB magnitudes
   ``-2.5 log10(flux / 3631 Jy)``, sky coordinates from the image's WCS (``ra``/``dec``:
   the PSF position with ``fit_psf``, else the centroid).
8. Flags: ``warning_flags`` bit 0 (DO_NOT_USE, 1) where the centroid's pixel is unusable,
   bit 1 (SATURATED, 2) where a pixel of the segment is saturated, bit 3 (4) where a pixel
   of the 0.4" aperture is unusable (NaN, DO_NOT_USE), bit 4 (8) where that aperture
   leaves the image; ``image_flags``: the DQ bits OR-ed over the segment.

Column names, units and dtypes are those of rad's ImageSourceCatalogModel (the L2
"prompt" catalog of romancal 1.1, in romancal's order); columns this step does not
measure (``dust_ebv``, ``flagged_spatial_id``, ``sharpness``, ``roundness1``, the
centroid errors) are NaN or -1. The catalog is written as ``<base>_cat.parquet`` (OUTPUT's
extension is replaced) with roman_datamodels' ``to_parquet``: the image's metadata and the
table's metadata (aperture radii, ee_fractions, versions) go into the Parquet schema's
metadata. The segmentation map goes beside it as ``<base>_segm.asdf`` (rad's
SegmentationMapModel: ``data`` the labels, ``detection_image`` the convolved image).

A mosaic is in MJy/sr (step 7: no photometry conversion, its WCS's pixel area), has no DQ
array (its pixels no input covered, weight 0, are unusable), and its PSF is the detector's
(the one most of its inputs came from; or ``override_epsf``) drizzled onto its grid
(romanpipe.roman_psf.mosaic_psf_model), whose encircled energy gives the aperture
corrections (no APCORR: its are a detector's, not a drizzled mosaic's); its products are
rad's MosaicSourceCatalogModel and MosaicSegmentationMapModel, with the same columns.

    python scripts/source_catalog.py r..._cal.asdf r..._cat.parquet [--fit-psf false] [--deblend true]
    python scripts/source_catalog.py r..._f158_i2d.asdf r..._f158_cat.parquet
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from romanpipe import cli
from romanpipe.catalogs import (
    APERTURE_RADII_ARCSEC,
    Detection,
    ImageScale,
    add_sky_coordinates,
    catalog_columns,
    catalog_meta,
    detect,
    flux_conversion,
    image_arrays,
    image_scale,
    measure,
    mosaic_psf,
    output_paths,
    schema_table,
    unusable_pixels,
    write_parquet,
)
from romanpipe.errors import InputFileError, NoScienceDataError
from romanpipe.products import derived_model, open_model, write_atomic
from romanpipe.refs import element_row
from romanpipe.roman_psf import encircled_energy, epsf_reference_model, kernel_and_psf
from romanpipe.steprun import StepRun, parse_step_args, record_provenance
from romanpipe.timing import PhaseTimer

import numpy as np
from astropy.table import Table
from roman_datamodels import datamodels

log = logging.getLogger("source_catalog")

STEP = "source_catalog"
INPUT_MODELS = (datamodels.ImageModel, datamodels.MosaicModel)
# The products of an image (Level 2) and of a mosaic (Level 3): rad's catalog and segmentation models.
OUTPUT_MODELS = {
    datamodels.ImageModel: (datamodels.ImageSourceCatalogModel, datamodels.SegmentationMapModel),
    datamodels.MosaicModel: (datamodels.MosaicSourceCatalogModel, datamodels.MosaicSegmentationMapModel),
}

@dataclass(frozen=True)
class CatalogResult:
    catalog: Table  # measured columns, pixel positions 0-based, fluxes in nJy, no sky coordinates
    detection: Detection
    ee_fractions: np.ndarray  # of APERTURE_RADII_ARCSEC


def apcorr_ee_fractions(path, optical_element: str, radii_pixels) -> np.ndarray:
    """The encircled energy within each radius (detector pixels) from the APCORR reference at
    ``path``: a cubic spline through its row's ``ee_fractions`` at ``ee_radii`` (rad's schema:
    pixels; romancal 1.1 evaluates its spline at the radii in arcsec).

    InputFileError naming the file when it has no row for ``optical_element`` or its radii do
    not reach the apertures'.
    """
    from scipy.interpolate import make_interp_spline

    with open_model(path, (datamodels.ApcorrRefModel,)) as reference:
        try:
            row = element_row(reference.data, optical_element, "apcorr")
        except LookupError as err:
            raise InputFileError(path, str(err)) from None
        radii = np.asarray(row["ee_radii"], dtype=np.float64)
        fractions = np.asarray(row["ee_fractions"], dtype=np.float64)
    wanted = np.asarray(radii_pixels, dtype=np.float64)
    if radii.size < 2 or wanted.min() < radii.min() or wanted.max() > radii.max():
        raise InputFileError(path, f"APCORR ee_radii of {optical_element} ({radii.min():.3g}-"
                                   f"{radii.max():.3g} pixels) do not cover the apertures "
                                   f"({wanted.min():.3g}-{wanted.max():.3g})")
    order = np.argsort(radii)
    spline = make_interp_spline(radii[order], fractions[order], k=min(3, radii.size - 1))
    return spline(wanted)


def source_catalog(data, err, dq, *, psf_model, ee_fractions, scale: ImageScale, flux_to_njy: float,
                   kernel_fwhm: float, snr_threshold: float = 2.0, npixels: int = 5, deblend: bool = True,
                   bkg_boxsize: int = 1000, fit_psf: bool = True) -> CatalogResult:
    """Steps 1-8 of the module docstring on one image (arrays in, new arrays out).

    ``psf_model``: the effective PSF of the image (photutils ImagePSF) fitted to every source
    with ``fit_psf`` (else unused: None); ``ee_fractions``: a point source's encircled energy
    within each of APERTURE_RADII_ARCSEC (the aperture corrections). ValueError if no pixel
    is usable.
    """
    mask = unusable_pixels(data, err, dq)
    if mask.all():
        raise ValueError("every pixel is flagged DO_NOT_USE or has no finite value and positive error")
    detection = detect(data, mask, kernel_fwhm=kernel_fwhm, snr_threshold=snr_threshold, npixels=npixels,
                       deblend=deblend, bkg_boxsize=bkg_boxsize)
    ee_fractions = np.asarray(ee_fractions, dtype=np.float64)
    if detection.segments is None:
        log.warning("no sources detected")
        return CatalogResult(Table(), detection, ee_fractions)
    catalog = measure(detection, err, dq, mask, scale=scale, flux_to_njy=flux_to_njy,
                      ee_fractions=ee_fractions, psf_model=psf_model if fit_psf else None)
    return CatalogResult(catalog, detection, ee_fractions)


def run(image, step: StepRun) -> tuple:
    """The catalog model and segmentation model of an open ImageModel (rad's ImageSourceCatalogModel,
    SegmentationMapModel) or MosaicModel (MosaicSourceCatalogModel, MosaicSegmentationMapModel)."""
    parameters, input_name = step.parameters, step.input
    data, err, dq = image_arrays(image)
    if data.ndim != 2 or 0 in data.shape or unusable_pixels(data, err, dq).all():
        raise NoScienceDataError(f"{input_name}: no usable pixel in data of shape {data.shape} "
                                 "(all DO_NOT_USE, not finite or without a positive error)")
    wcs = image.meta.get("wcs")
    scale = image_scale(wcs, data.shape)
    radii_pixels = [r / scale.pixel_scale_arcsec for r in APERTURE_RADII_ARCSEC]
    if isinstance(image, datamodels.MosaicModel):
        kernel_fwhm, psf_model = mosaic_psf(image, parameters, input_name, step.reference)
        ee_fractions = encircled_energy(psf_model, radii_pixels)
    else:
        kernel_fwhm, _ = kernel_and_psf(image.meta.instrument, parameters["kernel_fwhm"], False, input_name)
        psf_model = epsf_reference_model(step.reference("epsf")) if parameters["fit_psf"] else None
        optical_element = str(image.meta.instrument.optical_element)
        ee_fractions = apcorr_ee_fractions(step.reference("apcorr"), optical_element, radii_pixels)
    catalog_class, segmentation_class = OUTPUT_MODELS[type(image)]
    result = source_catalog(data, err, dq, psf_model=psf_model, ee_fractions=ee_fractions, scale=scale,
                            flux_to_njy=flux_conversion(image.meta, scale, surface_brightness=isinstance(
                                image, datamodels.MosaicModel)), kernel_fwhm=kernel_fwhm,
                            snr_threshold=parameters["snr_threshold"], npixels=parameters["npixels"],
                            deblend=parameters["deblend"], bkg_boxsize=parameters["bkg_boxsize"],
                            fit_psf=parameters["fit_psf"])
    add_sky_coordinates(result.catalog, wcs, parameters["fit_psf"] and len(result.catalog) > 0)
    catalog_model = derived_model(catalog_class, image, Path(input_name).name)
    table = schema_table(result.catalog, catalog_columns(parameters["fit_psf"]), catalog_model)
    table.meta.update(catalog_meta(result.ee_fractions, scale, kernel_fwhm))
    catalog_model.source_catalog = table
    segmentation = derived_model(segmentation_class, image, Path(input_name).name)
    segments = result.detection.segments
    segmentation.data = (np.zeros(data.shape, np.uint32) if segments is None
                         else segments.data.astype(np.uint32))
    segmentation["detection_image"] = result.detection.detection_image  # float32: rad's dtype
    log.info("%d sources in the catalog", len(table))
    return catalog_model, segmentation


def main(argv=None) -> None:
    args, parameters = parse_step_args(STEP, __doc__.split("\n\n")[0], argv)
    if parameters["skip"]:
        log.info("%s skipped: no catalog for %s", STEP, args.input)
        return
    catalog_path, segmentation_path = output_paths(args.output)
    timer = PhaseTimer()
    with timer.phase("read"):
        image = open_model(args.input, INPUT_MODELS)
    with image:
        step = StepRun(STEP, parameters, args.input, catalog_path, image.meta)
        with timer.phase("step"):
            catalog_model, segmentation = run(image, step)
        with timer.phase("provenance"):
            for model in (catalog_model, segmentation):
                record_provenance(model, STEP, parameters, step.references)
        with timer.phase("write"):
            write_atomic(segmentation, segmentation_path)
            write_parquet(catalog_model, catalog_path)
    timer.log(STEP)


if __name__ == "__main__":
    cli.run_and_exit(main)
