"""resample: the romancal documentation's decode_context example, flux and surface-brightness
conservation, a dithered star field measured back (photometry to 1 %, astrometry to 10 mas),
output grid options by hand, variances by hand, the memory limit, and the CLI end to end.

Inputs are Level 2 ImageModels in MJy/sr with tangent-plane GWCSs (0.11"/px, east left) built
here, independently of romanpipe. The dithered field is two 128 x 128 "detectors" 140 px
apart seen in four exposures with sub-pixel dithers and small rolls; its stars are
circular Gaussians (sigma 1.2 px) integrated over each pixel at known sky positions, on a sky of
0.3 MJy/sr that skymatch recorded but did not subtract.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import warnings
from pathlib import Path

from romanpipe import cli, drizzling
from romanpipe.association import asn_from_list, write_association
from romanpipe.drizzle_models import exposure_from_model
from romanpipe.errors import InputFileError
from romanpipe.params import step_defaults
from romanpipe.resample_setup import OutputTooLargeError, scratch_space

import asdf
import numpy as np
import pytest
import roman_datamodels as rdm
from astropy import coordinates
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.modeling.models import AffineTransformation2D, Pix2Sky_TAN, RotateNative2Celestial, Shift
from astropy.time import Time
from drizzle.utils import decode_context
from gwcs import coordinate_frames as cf
from gwcs import wcs as gwcs_wcs
from photutils.aperture import CircularAperture, aperture_photometry
from photutils.centroids import centroid_2dg
from roman_datamodels import datamodels
from scipy.special import erf

import resample

SCALE = 0.11 / 3600.0                      # deg per pixel
PIXEL_AREA = (0.11 / 206264.806) ** 2      # sr
FIELD_CENTRE = (10.0, 20.0)
DETECTOR = 128
DETECTOR_OFFSETS = [(0, 0), (140, 0)]      # two detectors side by side, a 12 px gap
DITHERS = [(0.0, 0.0, 0.0), (20.5, 3.25, 0.1), (-7.25, 15.5, -0.1), (13.75, -11.0, 0.05)]  # dx, dy, roll
PSF_SIGMA = 1.2
SKY = 0.3
DNU = 1


def tan_gwcs(crpix, crval, roll_deg, shape, scale=SCALE):
    """pixel -> CD . (pixel - crpix) (east left, rolled) -> TAN at crval -> ICRS."""
    roll = np.radians(roll_deg)
    cd = scale * np.array([[-np.cos(roll), np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    transform = (Shift(-crpix[0]) & Shift(-crpix[1]) | AffineTransformation2D(matrix=cd)
                 | Pix2Sky_TAN() | RotateNative2Celestial(*crval, 180.0))
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    world = cf.CelestialFrame(reference_frame=coordinates.ICRS(), name="world")
    wcs = gwcs_wcs.WCS([(detector, transform), (world, None)])
    nrows, ncols = shape
    wcs.bounding_box = ((-0.5, ncols - 0.5), (-0.5, nrows - 0.5))
    return wcs


def position_angle(wcs, x, y):
    """Position angle (deg, east of north) of the +Y pixel axis at (x, y)."""
    ra, dec = wcs(np.array([x, x]), np.array([y, y + 1.0]), with_bounding_box=False)
    return SkyCoord(ra[0], dec[0], unit="deg").position_angle(SkyCoord(ra[1], dec[1], unit="deg")).deg % 360


def pixel_scale_arcsec(wcs, x, y):
    ra, dec = wcs(np.array([x, x + 1.0, x]), np.array([y, y, y + 1.0]), with_bounding_box=False)
    points = SkyCoord(ra, dec, unit="deg")
    return np.sqrt(points[0].separation(points[1]).arcsec * points[0].separation(points[2]).arcsec)


def image_model(data, wcs, *, name="image", var_rnoise=None, var_poisson=None, var_flat=None, dq=None,
                exposure_time=100.0, observation_id="exposure1", sky=None, start="2027-06-01T00:00:00"):
    """A Level 2 ImageModel in MJy/sr with its GWCS and (optionally) a recorded, unsubtracted sky."""
    shape = data.shape
    model = datamodels.ImageModel.create_fake_data(shape=shape)
    model.meta.filename = f"{name}_cal.asdf"
    model.data = np.asarray(data, np.float32)
    model.dq = np.zeros(shape, np.uint32) if dq is None else dq.astype(np.uint32)
    rn = np.full(shape, 4e-4) if var_rnoise is None else var_rnoise
    poisson = np.zeros(shape) if var_poisson is None else var_poisson
    flat = np.zeros(shape) if var_flat is None else var_flat
    model.var_rnoise = np.asarray(rn, np.float16)
    model.var_poisson = np.asarray(poisson, np.float16)
    model.var_flat = np.asarray(flat, np.float16)
    model.err = np.sqrt(np.asarray(rn) + poisson + flat).astype(np.float16)
    model.meta.wcs = wcs
    model.meta.exposure.exposure_time = exposure_time
    model.meta.exposure.start_time = Time(start)
    model.meta.exposure.end_time = Time(start) + exposure_time * u.s
    model.meta.observation.observation_id = observation_id
    model.meta.instrument.optical_element = "F158"
    if sky is not None:
        model.meta["background"] = {"level": float(sky), "method": "local", "subtracted": False}
    return model


def pixelated_stars(shape, x, y, surface_integral, sigma=PSF_SIGMA):
    """Circular Gaussians integrated exactly over each pixel (pixel centres at integers)."""
    nrows, ncols = shape
    image = np.zeros(shape)
    x_edges, y_edges = np.arange(ncols + 1) - 0.5, np.arange(nrows + 1) - 0.5
    for xs, ys, total in zip(x, y, surface_integral, strict=True):
        if -10 < xs < ncols + 10 and -10 < ys < nrows + 10:
            fx = np.diff(0.5 * erf((x_edges - xs) / (np.sqrt(2) * sigma)))
            fy = np.diff(0.5 * erf((y_edges - ys) / (np.sqrt(2) * sigma)))
            image += total * np.outer(fy, fx)
    return image


def dithered_field(seed=3, noise=True, dithers=DITHERS, star_spacing=28.0, psf_sigma=PSF_SIGMA):
    """ImageModels of the dithered two-detector field and the truth (RA, Dec, flux in MJy)."""
    rng = np.random.default_rng(seed)
    focal_plane = tan_gwcs((DETECTOR / 2 + 70, DETECTOR / 2), FIELD_CENTRE, 0.0, (DETECTOR, 300))
    grid_x, grid_y = np.meshgrid(np.arange(15, 270, star_spacing), np.arange(15, 128, star_spacing))
    star_x = grid_x.ravel() + rng.uniform(-3, 3, grid_x.size)
    star_y = grid_y.ravel() + rng.uniform(-3, 3, grid_x.size)
    star_ra, star_dec = focal_plane(star_x, star_y, with_bounding_box=False)
    flux = rng.uniform(0.5, 2.0, star_x.size) * 1e-9
    models = []
    for e, (dx, dy, roll) in enumerate(dithers):
        for k, (ox, oy) in enumerate(DETECTOR_OFFSETS):
            wcs = tan_gwcs((DETECTOR / 2 + 70 - ox + dx, DETECTOR / 2 - oy + dy), FIELD_CENTRE, roll,
                           (DETECTOR, DETECTOR))
            x, y = wcs.backward_transform(star_ra, star_dec)
            truth = pixelated_stars((DETECTOR, DETECTOR), x, y, flux / PIXEL_AREA, psf_sigma) + SKY
            var_rnoise = np.full(truth.shape, 0.02**2)
            var_poisson = 1e-3 * truth
            data = truth + (rng.normal(size=truth.shape) * np.sqrt(var_rnoise + var_poisson) if noise else 0)
            models.append(image_model(data, wcs, name=f"r0000101001001001001_0101{e}_0001_WFI0{k + 1}",
                                      var_rnoise=var_rnoise, var_poisson=var_poisson,
                                      observation_id=f"exposure{e}", sky=SKY,
                                      start=f"2027-06-01T00:{10 * e:02d}:00"))
    return models, (star_ra, star_dec, flux)


def parameters(**changes):
    values = step_defaults("resample")
    values.update(changes)
    return values


def run(models, **changes):
    names = [m.meta.filename for m in models]
    return resample.resample_models(models, names, parameters(**changes), association_name="test_asn.json")


# ---------------------------------------------------------------- context image

def test_decode_context_reproduces_the_documented_example():
    con = np.array([[[0, 0, 0, 0, 0, 0], [0, 0, 0, 36196864, 0, 0], [0, 0, 0, 0, 0, 0],
                     [0, 0, 0, 0, 0, 0], [0, 0, 537920000, 0, 0, 0]],
                    [[0, 0, 0, 0, 0, 0], [0, 0, 0, 67125536, 0, 0], [0, 0, 0, 0, 0, 0],
                     [0, 0, 0, 0, 0, 0], [0, 0, 163856, 0, 0, 0]],
                    [[0, 0, 0, 0, 0, 0], [0, 0, 0, 8203, 0, 0], [0, 0, 0, 0, 0, 0],
                     [0, 0, 0, 0, 0, 0], [0, 0, 32865, 0, 0, 0]]], dtype=np.int32)
    first, second = decode_context(con, [3, 2], [1, 4])
    assert first.tolist() == [9, 12, 14, 19, 21, 25, 37, 40, 46, 58, 64, 65, 67, 77]
    assert second.tolist() == [9, 20, 29, 36, 47, 49, 64, 69, 70, 79]


def test_context_has_a_plane_per_32_inputs_and_names_each_contributor():
    # 35 images: the first 33 on one patch of sky, the last two 20 px east of it.
    models = []
    for k in range(35):
        shift = 20.0 if k >= 33 else 0.0
        wcs = tan_gwcs((8 + shift, 8), FIELD_CENTRE, 0.0, (16, 16))
        models.append(image_model(np.ones((16, 16)), wcs, name=f"image{k}", observation_id=f"exposure{k}"))
    mosaic, = run(models, kernel="point", crval=list(FIELD_CENTRE))
    context = np.asarray(mosaic.context)
    assert context.dtype == np.uint32 and context.shape[0] == 2
    x, y = (int(v) for v in np.round(mosaic.meta.wcs.backward_transform(*FIELD_CENTRE)))
    assert decode_context(context, [x], [y])[0].tolist() == list(range(33))
    east_x = int(np.round(mosaic.meta.wcs.backward_transform(*tan_gwcs(
        (8, 8), FIELD_CENTRE, 0.0, (16, 16))(-12.0, 8.0, with_bounding_box=False))[0]))
    assert decode_context(context, [east_x], [y])[0].tolist() == [33, 34]
    assert mosaic.meta.resample.pointings == 35


# ---------------------------------------------------------------- conservation

@pytest.mark.parametrize("kernel", ["square", "point", "tophat", "turbo", "gaussian", "lanczos3"])
@pytest.mark.parametrize("ratio, pixfrac", [(1.0, 1.0), (0.5, 0.8)])
def test_constant_surface_brightness_is_preserved(kernel, ratio, pixfrac):
    models = [image_model(np.full((40, 40), 2.5), tan_gwcs((20 + dx, 20 + dy), FIELD_CENTRE, roll, (40, 40)),
                          name=f"image{k}", observation_id=f"exposure{k}")
              for k, (dx, dy, roll) in enumerate(DITHERS)]
    mosaic, = run(models, kernel=kernel, pixel_scale_ratio=ratio, pixfrac=pixfrac)
    # Some input reached the pixel (lanczos weights can be negative, so not weight > 0).
    covered = np.asarray(mosaic.context)[0] != 0
    assert covered.mean() > (0.3 if kernel in ("point", "tophat") else 0.75)
    np.testing.assert_allclose(np.asarray(mosaic.data)[covered], 2.5, rtol=2e-6)
    assert np.isnan(np.asarray(mosaic.data)[~covered]).all()     # INDEF leaves NaN


def test_total_flux_of_a_star_is_conserved_on_a_finer_grid():
    wcs = tan_gwcs((31.3, 30.6), FIELD_CENTRE, 0.0, (64, 64))
    flux = 1e-9
    model = image_model(pixelated_stars((64, 64), [31.3], [30.6], [flux / PIXEL_AREA]), wcs)
    for ratio in (1.0, 0.5, 0.37):
        mosaic, = run([model], pixel_scale_ratio=ratio)
        output_area = (mosaic.meta.wcsinfo.pixel_scale * np.pi / 180) ** 2
        assert np.nansum(mosaic.data) * output_area == pytest.approx(flux, rel=1e-4)
        assert mosaic.meta.resample.pixel_scale_ratio == pytest.approx(ratio, rel=1e-6)


@pytest.mark.parametrize("shift, reached", [(0.2, True), (0.3, False)])
def test_tophat_reaches_only_output_pixels_within_half_pixfrac(shift, reached):
    # Output pixel centres sit `shift` input pixels from the input pixel centres; the tophat of
    # pixfrac 0.5 reaches 0.25 pixel around each input centre.
    data = np.arange(100, dtype=np.float32).reshape(10, 10)
    model = image_model(data, tan_gwcs((5.0, 5.0), FIELD_CENTRE, 0.0, (10, 10)))
    grid = tan_gwcs((5.0 + shift, 5.0), FIELD_CENTRE, 0.0, (10, 10))
    grid.pixel_shape = (10, 10)
    exposure = exposure_from_model(model, "image")
    mosaic = drizzling.resample([exposure], grid, n_inputs=1, kernel="tophat", pixfrac=0.5)
    if reached:
        # Input pixel x lands on output pixel x + shift, nearest centre x: the same values.
        np.testing.assert_allclose(mosaic.data[:, :], data, rtol=1e-6)
    else:
        assert np.isnan(mosaic.data).all() and (mosaic.weight == 0).all()


# ---------------------------------------------------------------- the dithered field

@pytest.fixture(scope="module")
def field():
    models, truth = dithered_field()
    mosaic, = run(models)
    return models, truth, mosaic


def test_dithered_field_photometry_within_1_percent_and_positions_within_10_mas(field):
    _, (star_ra, star_dec, flux), mosaic = field
    data, weight, context = np.asarray(mosaic.data), np.asarray(mosaic.weight), np.asarray(mosaic.context)
    wcs = mosaic.meta.wcs
    output_area = (mosaic.meta.wcsinfo.pixel_scale * np.pi / 180) ** 2
    x, y = wcs.backward_transform(star_ra, star_dec)
    flux_errors, offsets_mas = [], []
    for j in range(star_ra.size):
        xi, yi = int(round(x[j])), int(round(y[j]))
        box = np.s_[yi - 9:yi + 10, xi - 9:xi + 10]
        if not (9 <= xi < data.shape[1] - 9 and 9 <= yi < data.shape[0] - 9):
            continue
        # Isolated and covered alike: every pixel of the aperture has the same contributing inputs.
        if not ((weight[box] > 0).all() and (context[0][box] == context[0, yi, xi]).all()):
            continue
        cx, cy = centroid_2dg(data[yi - 8:yi + 9, xi - 8:xi + 9])
        cx, cy = cx + xi - 8, cy + yi - 8
        total = aperture_photometry(data, CircularAperture((cx, cy), 8.0))["aperture_sum"][0]
        flux_errors.append(total * output_area / flux[j] - 1)
        ra, dec = wcs(cx, cy)
        offsets_mas.append(SkyCoord(ra, dec, unit="deg").separation(
            SkyCoord(star_ra[j], star_dec[j], unit="deg")).to(u.mas).value)
    assert len(flux_errors) >= 10
    assert np.max(np.abs(flux_errors)) < 0.01
    assert np.max(offsets_mas) < 10.0


def test_dithered_field_sky_is_removed_and_noise_averages_down(field):
    models, _, mosaic = field
    data = np.asarray(mosaic.data)
    star_free = np.abs(data) < 0.2
    assert np.median(data[star_free]) == pytest.approx(0.0, abs=0.005)
    # Where all four exposures overlap (one detector each: 4 context bits) the read-noise
    # variance is 0.02**2 / 4 (equal ivm weights).
    bits = np.unpackbits(np.asarray(mosaic.context)[0].view(np.uint8)).reshape(*data.shape, 32).sum(axis=-1)
    assert (bits == 4).sum() > 0.3 * data.size
    assert np.median(np.asarray(mosaic.var_rnoise)[bits == 4]) == pytest.approx(0.02**2 / 4, rel=2e-3)
    assert mosaic.meta.resample.pointings == 4
    assert mosaic.meta.resample.members == [m.meta.filename for m in models]
    assert mosaic.meta.coadd_info.max_exposure_time == pytest.approx(400.0)


def test_dithered_field_mosaic_covers_every_input_at_the_first_inputs_orientation(field):
    models, _, mosaic = field
    wcs = mosaic.meta.wcs
    first = models[0].meta.wcs
    # Same orientation and scale at the centre of the first input (angles vary across a TAN grid).
    x, y = wcs.backward_transform(*first(63.5, 63.5))
    assert position_angle(wcs, x, y) == pytest.approx(position_angle(first, 63.5, 63.5), abs=1e-6)
    assert pixel_scale_arcsec(wcs, x, y) == pytest.approx(0.11, rel=1e-6)
    ny, nx = mosaic.data.shape
    for model in models:
        corners = model.meta.wcs(np.array([-0.5, 127.5, 127.5, -0.5]), np.array([-0.5, -0.5, 127.5, 127.5]))
        cx, cy = wcs.backward_transform(*corners)
        assert (cx >= -0.5 - 1e-6).all() and (cx <= nx - 0.5 + 1e-6).all()
        assert (cy >= -0.5 - 1e-6).all() and (cy <= ny - 0.5 + 1e-6).all()
    # The grid is no larger than the footprints need: some input reaches each edge.
    assert np.isfinite(np.asarray(mosaic.data)[:, 0]).any() and np.isfinite(np.asarray(mosaic.data)[0]).any()


# ---------------------------------------------------------------- variances and weights by hand

# ---------------------------------------------------------------- weights on ramp-fitted images

RAMP_GAIN, RAMP_READ_NOISE = 2.0, 5.0      # e/DN, DN per read
ELECTRONS_PER_MJYSR = 3.0                  # e/s per MJy/sr: the 0.3 MJy/sr sky is 0.9 e/s


def ramp_fitted_field(seed=5):
    """Two exposures of the dithered field as our ols_cas22 ramp fit leaves them: bright, sharp
    stars (peaks ~10^4 e/s) on a 0.9 e/s sky, IMG_UNEVEN_6 ramps with Poisson and read noise,
    VAR_RNOISE and VAR_POISSON from the fit (VAR_RNOISE rises with a pixel's signal there)."""
    from rampfit_kernels.cas22 import fit_ramps_cas22
    from wfisim.matables import MA_TABLES

    table = MA_TABLES["IMG_UNEVEN_6"]
    rng = np.random.default_rng(seed)
    models, (star_ra, star_dec, flux) = dithered_field(noise=False, dithers=DITHERS[:2], psf_sigma=0.8)
    to_mjysr = RAMP_GAIN / ELECTRONS_PER_MJYSR
    for model in models:
        truth = np.asarray(model.data, np.float64) * 3.0 - 2 * SKY        # stars x3, sky kept at 0.3
        shape = truth.shape
        rates = (truth * ELECTRONS_PER_MJYSR).ravel()
        charge = np.cumsum(rng.poisson(rates * table.frame_time, size=(table.last_read, rates.size)), axis=0,
                           dtype=np.float64)
        resultants = np.empty((table.nresultants, *shape), np.float32)
        for index, reads in enumerate(table.read_pattern):
            signal = charge[np.asarray(reads) - 1] / RAMP_GAIN
            read = signal + rng.normal(0, RAMP_READ_NOISE, signal.shape)
            resultants[index] = read.mean(axis=0).reshape(shape)
        fit = fit_ramps_cas22(resultants, np.zeros(resultants.shape, np.uint8), np.zeros(shape, np.uint32),
                              np.full(shape, RAMP_GAIN, np.float32),
                              np.full(shape, RAMP_READ_NOISE, np.float32), None,
                              [list(r) for r in table.read_pattern], table.frame_time)
        model.data = (fit.slope * to_mjysr).astype(np.float32)
        model.var_rnoise = (fit.var_rnoise * to_mjysr**2).astype(np.float16)
        model.var_poisson = (fit.var_poisson * to_mjysr**2).astype(np.float16)
        model.err = np.sqrt(fit.var_rnoise + fit.var_poisson).astype(np.float16) * np.float16(to_mjysr)
    return models, (star_ra, star_dec, flux * 3.0)


@pytest.fixture(scope="module")
def ramp_field():
    return ramp_fitted_field()


def star_fluxes(data, wcs, star_ra, star_dec, pixel_area, radius=6.0):
    """Aperture sums (MJy) at the true positions, NaN where the aperture is not all on data."""
    x, y = wcs.backward_transform(star_ra, star_dec)
    fluxes = np.full(star_ra.size, np.nan)
    for j in range(star_ra.size):
        xi, yi = int(round(x[j])), int(round(y[j]))
        box = np.s_[yi - 8:yi + 9, xi - 8:xi + 9]
        if 8 <= xi < data.shape[1] - 8 and 8 <= yi < data.shape[0] - 8 and np.isfinite(data[box]).all():
            fluxes[j] = aperture_photometry(data, CircularAperture((x[j], y[j]), radius))["aperture_sum"][0]
    return fluxes * pixel_area


def mosaic_over_single_exposure_fluxes(models, star_ra, star_dec, weight_type):
    """Each star's flux in the 2-exposure mosaic over its mean flux in the exposures' own images."""
    mosaic, = run(models, weight_type=weight_type)
    area = (mosaic.meta.wcsinfo.pixel_scale * np.pi / 180) ** 2
    in_mosaic = star_fluxes(np.asarray(mosaic.data), mosaic.meta.wcs, star_ra, star_dec, area)
    sky = [model.meta.background.level for model in models]
    singles = np.array([star_fluxes(np.asarray(model.data) - level, model.meta.wcs, star_ra, star_dec,
                                    PIXEL_AREA) for model, level in zip(models, sky, strict=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # stars seen by one detector of neither exposure
        single = np.nanmean(singles, axis=0)
    ratio = in_mosaic / single
    return ratio[np.isfinite(ratio)]


def test_ivm_weights_lose_star_flux_where_the_ramp_fit_read_noise_rises_with_signal(ramp_field):
    models, (star_ra, star_dec, _) = ramp_field
    core = np.asarray(models[0].var_rnoise, np.float32)
    assert core.max() > 2 * np.median(core)                     # the ramp fit's VAR_RNOISE follows the stars
    ratio = mosaic_over_single_exposure_fluxes(models, star_ra, star_dec, "ivm")
    assert ratio.size >= 20
    assert np.median(ratio) < 0.99


@pytest.mark.parametrize("weight_type", [step_defaults("resample")["weight_type"], "ivm-smed", "exptime"])
def test_default_weights_keep_single_exposure_star_fluxes_in_the_mosaic(ramp_field, weight_type):
    models, (star_ra, star_dec, _) = ramp_field
    ratio = mosaic_over_single_exposure_fluxes(models, star_ra, star_dec, weight_type)
    assert ratio.size >= 20
    assert 0.99 <= np.median(ratio) <= 1.01
    assert np.percentile(ratio, 10) >= 0.98


def test_ivm_sky_is_romancals_sky_variance_and_ivm_smed_its_local_median():
    """VAR_SKY = VAR_RNOISE + VAR_POISSON / DATA * MEDIAN(DATA) by hand; its block median ignores a star."""
    shape = (64, 64)
    data = np.full(shape, 2.0)
    data[10, 10] = 200.0                              # a star's core
    data[40:, :] = 4.0                                # a brighter half: median(DATA) = 2
    var_rnoise = np.full(shape, 0.01)
    var_rnoise[10, 10] = 1.0                          # the ramp fit's read noise rises in the core
    var_poisson = 0.005 * data
    wcs = tan_gwcs((32, 32), FIELD_CENTRE, 0.0, shape)
    model = image_model(data, wcs, var_rnoise=var_rnoise, var_poisson=var_poisson)
    exposure = exposure_from_model(model, "image")
    sky = drizzling.sky_variance(exposure)
    expected = var_rnoise + np.asarray(var_poisson, np.float16).astype(np.float32) / data * 2.0
    np.testing.assert_allclose(sky, expected, rtol=2e-3)
    good = np.ones(shape, bool)
    local = drizzling.local_sky_variance(exposure, good, block=16)
    # Block medians: 0.01 + 0.005 * 2 everywhere (the star is one pixel of 256; the bright half's
    # Poisson term is scaled back to the median), so the star's pixel weighs as its neighbours.
    np.testing.assert_allclose(local, 0.02, rtol=2e-3)
    weight = drizzling.drizzle_weight(exposure, "ivm-smed", "~DO_NOT_USE")
    assert weight[10, 10] == pytest.approx(weight[12, 12], rel=1e-6)
    assert drizzling.drizzle_weight(exposure, "ivm", "~DO_NOT_USE")[10, 10] == pytest.approx(1.0, rel=1e-3)
    # A read noise rising linearly along x is kept between block centres (pixel 7.5, 23.5, ...),
    # and beyond the outer centres the nearest block's median holds.
    ramp = 0.01 + 0.001 * np.arange(64)[None, :] * np.ones(shape)
    model = image_model(np.full(shape, 2.0), wcs, var_rnoise=ramp, var_poisson=np.zeros(shape))
    local = drizzling.local_sky_variance(exposure_from_model(model, "ramp"), good, block=16)
    expected = 0.01 + 0.001 * np.clip(np.arange(64), 7.5, 55.5)
    np.testing.assert_allclose(local[5], expected, rtol=2e-3)


def test_variances_combine_with_squared_weights_and_err_is_their_root():
    wcs = tan_gwcs((10, 10), FIELD_CENTRE, 0.0, (20, 20))
    a = image_model(np.full((20, 20), 1.0), wcs, name="a", exposure_time=100.0, observation_id="a",
                    var_rnoise=np.full((20, 20), 0.01), var_poisson=np.full((20, 20), 0.02),
                    var_flat=np.full((20, 20), 0.03))
    b = image_model(np.full((20, 20), 3.0), wcs, name="b", exposure_time=300.0, observation_id="b",
                    var_rnoise=np.full((20, 20), 0.04), var_poisson=np.full((20, 20), 0.02),
                    var_flat=np.full((20, 20), 0.03))
    ivm, = run([a, b], weight_type="ivm")
    inner = np.s_[2:-2, 2:-2]
    # Weights 1/0.01 and 1/0.04: mean (100 + 3 * 25) / 125; variances sum(w^2 v) / sum(w)^2.
    assert np.asarray(ivm.data)[inner] == pytest.approx(1.4, rel=1e-5)
    assert np.asarray(ivm.var_rnoise)[inner] == pytest.approx((1e4 * 0.01 + 625 * 0.04) / 125**2, rel=2e-3)
    assert np.asarray(ivm.var_poisson)[inner] == pytest.approx((1e4 + 625) * 0.02 / 125**2, rel=2e-3)
    expected_err = np.sqrt(ivm.var_rnoise[inner] + ivm.var_poisson[inner] + ivm.var_flat[inner])
    np.testing.assert_allclose(np.asarray(ivm.err)[inner], expected_err, rtol=1e-6)
    exptime, = run([a, b], weight_type="exptime")
    assert np.asarray(exptime.data)[inner] == pytest.approx((100 * 1 + 300 * 3) / 400, rel=1e-5)
    assert np.asarray(exptime.var_flat)[inner] == pytest.approx((1e4 + 9e4) * 0.03 / 400**2, rel=2e-3)


def test_pixels_flagged_outside_good_bits_do_not_contribute():
    wcs = tan_gwcs((10, 10), FIELD_CENTRE, 0.0, (20, 20))
    data = np.full((20, 20), 1.0)
    data[5, 5] = 1e6
    dq = np.zeros((20, 20), np.uint32)
    dq[5, 5] = DNU
    flagged = image_model(data, wcs, dq=dq, name="flagged", observation_id="a")
    clean = image_model(np.full((20, 20), 1.0), wcs, name="clean", observation_id="b")
    mosaic, = run([flagged, clean])
    assert np.nanmax(mosaic.data) == pytest.approx(1.0)
    every_bit, = run([flagged, clean], good_bits="~0")
    assert np.nanmax(every_bit.data) > 1e5


def test_fillval_fills_pixels_no_input_reached():
    models = [image_model(np.ones((20, 20)), tan_gwcs((10 + 30 * k, 10), FIELD_CENTRE, 0.0, (20, 20)),
                          name=f"i{k}", observation_id=f"e{k}") for k in range(2)]
    indef, = run(models)
    zero, = run(models, fillval="0")
    empty = np.asarray(indef.weight) == 0
    assert empty.any()
    assert np.isnan(np.asarray(indef.data)[empty]).all() and (np.asarray(zero.data)[empty] == 0).all()


# ---------------------------------------------------------------- output grid options by hand

@pytest.fixture(scope="module")
def two_images():
    return [image_model(np.ones((30, 40)), tan_gwcs((20 + 7.5 * k, 15 - 3.25 * k), FIELD_CENTRE, 20.0 + k,
                                                    (30, 40)), name=f"i{k}", observation_id=f"e{k}")
            for k in range(2)]


def test_pixel_scale_ratio_and_pixel_scale_set_the_output_pixel_size(two_images):
    native, = run(two_images)
    half, = run(two_images, pixel_scale_ratio=0.5)
    assert pixel_scale_arcsec(half.meta.wcs, 10, 10) == pytest.approx(0.055, rel=1e-5)
    assert half.data.shape[0] == pytest.approx(2 * native.data.shape[0], abs=2)
    absolute, = run(two_images, pixel_scale=0.2, pixel_scale_ratio=0.5)
    assert pixel_scale_arcsec(absolute.meta.wcs, 5, 5) == pytest.approx(0.2, rel=1e-5)
    assert absolute.meta.resample.pixel_scale_ratio == pytest.approx(0.2 / 0.11, rel=1e-5)


@pytest.mark.parametrize("rotation", [0.0, 30.0, -45.0])
def test_rotation_sets_the_position_angle_of_the_output_y_axis(two_images, rotation):
    mosaic, = run(two_images, rotation=rotation)
    info = mosaic.meta.wcsinfo
    # At the reference pixel (the tangent point), +Y is at the requested position angle ...
    angle = position_angle(mosaic.meta.wcs, info.x_ref, info.y_ref)
    assert (angle - rotation + 180) % 360 - 180 == pytest.approx(0, abs=1e-6)
    assert (info.orientation_ref - rotation + 180) % 360 - 180 == pytest.approx(0, abs=1e-6)
    # ... and +X 90 degrees clockwise from it seen on the sky: the inputs' parity (east left).
    ra, dec = mosaic.meta.wcs([info.x_ref, info.x_ref + 1], [info.y_ref, info.y_ref], with_bounding_box=False)
    x_angle = SkyCoord(ra[0], dec[0], unit="deg").position_angle(SkyCoord(ra[1], dec[1], unit="deg")).deg
    assert (x_angle - rotation - 270 + 180) % 360 - 180 == pytest.approx(0, abs=1e-6)


def test_crval_crpix_and_output_shape_place_the_grid(two_images):
    crval = (FIELD_CENTRE[0] + 0.001, FIELD_CENTRE[1] - 0.0005)
    placed, = run(two_images, crval=f"{crval[0]},{crval[1]}", crpix=[12.0, 7.0])
    ra, dec = placed.meta.wcs(12.0, 7.0)
    assert (ra, dec) == pytest.approx(crval, abs=1e-10)
    assert (placed.meta.wcsinfo.x_ref, placed.meta.wcsinfo.y_ref) == (12.0, 7.0)
    assert (placed.meta.wcsinfo.ra_ref, placed.meta.wcsinfo.dec_ref) == pytest.approx(crval, abs=1e-10)
    shaped, = run(two_images, output_shape="51,40")
    assert shaped.data.shape == (40, 51)
    # crpix defaults to the image centre, where the default crval (the footprints' centre) lands.
    default, = run(two_images)
    assert shaped.meta.wcs(25.0, 19.5) == pytest.approx(
        (default.meta.wcsinfo.ra_ref, default.meta.wcsinfo.dec_ref), abs=1e-10)


def test_output_wcs_file_defines_the_grid(two_images, tmp_path):
    grid = tan_gwcs((30.0, 25.0), FIELD_CENTRE, 90.0, (50, 60), scale=0.2 / 3600)
    path = tmp_path / "grid.asdf"
    asdf.AsdfFile({"wcs": grid}).write_to(path)
    mosaic, = run(two_images, output_wcs=str(path), pixel_scale_ratio=0.3, rotation=10.0)
    assert mosaic.data.shape == (50, 60)                      # from the bounding box
    probe_x, probe_y = np.array([0.0, 59.0, 30.0]), np.array([0.0, 49.0, 25.0])
    np.testing.assert_allclose(np.array(mosaic.meta.wcs(probe_x, probe_y)),
                               np.array(grid(probe_x, probe_y)), atol=1e-12)
    reshaped, = run(two_images, output_wcs=str(path), output_shape=[20, 10])
    assert reshaped.data.shape == (10, 20)
    grid.bounding_box = None
    bare = tmp_path / "bare.asdf"
    asdf.AsdfFile({"wcs": grid}).write_to(bare)
    with pytest.raises(InputFileError, match="output_shape"):
        run(two_images, output_wcs=str(bare))



def test_single_groups_the_images_of_an_exposure_by_group_id_then_observation_id(two_images):
    """romancal 1.1's ModelLibrary grouping: meta.group_id wins over observation_id."""
    assert len(run(two_images, single=True)) == 2                 # observation ids e0 and e1
    for model in two_images:
        model.meta["group_id"] = "roman00001_exposure1"
    together, = run(two_images, single=True)
    assert together.meta.resample.members == ["i0_cal.asdf", "i1_cal.asdf"]
    assert together.meta.resample.pointings == 1


# ---------------------------------------------------------------- memory

def test_allowed_memory_too_small_raises_output_too_large(two_images, monkeypatch):
    with pytest.raises(OutputTooLargeError, match="allowed_memory=1e-12"):
        run(two_images, allowed_memory=1e-12)
    monkeypatch.setenv("DMODEL_ALLOWED_MEMORY", "1e-12")
    with pytest.raises(OutputTooLargeError):
        run(two_images)
    monkeypatch.setenv("DMODEL_ALLOWED_MEMORY", "0.9")
    mosaic, = run(two_images)
    assert np.isfinite(mosaic.data).any()


def test_on_disk_work_arrays_give_the_same_mosaic(two_images, tmp_path):
    in_memory, = run(two_images)
    with scratch_space(False, tmp_path) as scratch:
        names = [m.meta.filename for m in two_images]
        on_disk, = resample.resample_models(two_images, names, parameters(in_memory=False),
                                            association_name="a.json", scratch=scratch)
        assert any(tmp_path.glob(".drizzle.*/*.npy"))
        for name in ("data", "weight", "context", "err", "var_rnoise"):
            np.testing.assert_array_equal(np.asarray(on_disk[name]), np.asarray(in_memory[name]))
    assert not any(tmp_path.glob(".drizzle.*"))


# ---------------------------------------------------------------- command line

def write_inputs(tmp_path, models):
    for model in models:
        model.save(tmp_path / model.meta.filename)
    asn = asn_from_list([m.meta.filename for m in models], product_name="r00001-a3001_field")
    return write_association(asn, tmp_path / "r00001-a3001_field_asn.json")


def test_cli_end_to_end_writes_a_valid_mosaic(tmp_path):
    models, _ = dithered_field(noise=False, dithers=DITHERS[:2])
    asn = write_inputs(tmp_path, models)
    output = tmp_path / "r00001-a3001_field_i2d.asdf"
    crval = f"{FIELD_CENTRE[0]}, {FIELD_CENTRE[1]}"
    assert cli.run(resample.main, [str(asn), str(output), "--pixel-scale-ratio", "0.8",
                                   "--in-memory", "false", "--crval", crval]) == 0
    with rdm.open(output) as mosaic:
        assert isinstance(mosaic, datamodels.MosaicModel)
        assert mosaic.meta.cal_step.resample == "COMPLETE"
        assert mosaic.meta.resample.members == [m.meta.filename for m in models]
        assert mosaic.meta.resample.pixel_scale_ratio == pytest.approx(0.8, rel=1e-6)
        assert mosaic.meta.association.name == asn.name
        assert mosaic.context.dtype == np.uint32 and mosaic.context.ndim == 3
        assert (mosaic.meta.wcsinfo.ra_ref, mosaic.meta.wcsinfo.dec_ref) == pytest.approx(FIELD_CENTRE)
        assert len(mosaic.meta.individual_image_meta["exposure"]) == len(models)
        assert mosaic.meta.provenance["resample"]["parameters"]["pixel_scale_ratio"] == 0.8
        assert np.nanmax(mosaic.data) > 10 * SKY
    assert not list(tmp_path.glob(".drizzle.*"))


def test_cli_single_writes_one_mosaic_per_exposure_and_an_association(tmp_path):
    models, _ = dithered_field(noise=False, dithers=DITHERS[:2])
    asn = write_inputs(tmp_path, models)
    output = tmp_path / "single_asn.json"
    assert cli.run(resample.main, [str(asn), str(output), "--single", "true",
                                   "--blendheaders", "false"]) == 0
    listed = [m["expname"] for m in json.loads(output.read_text())["products"][0]["members"]]
    assert listed == [models[0].meta.filename.replace("_cal", "_i2d"),
                      models[2].meta.filename.replace("_cal", "_i2d")]
    for name, exposure in zip(listed, (models[:2], models[2:]), strict=True):
        with rdm.open(tmp_path / name) as mosaic:
            assert mosaic.meta.resample.members == [m.meta.filename for m in exposure]
            assert mosaic.meta.resample.pointings == 1
            assert dict(mosaic.meta.individual_image_meta) == {}
    assert cli.run(resample.main, [str(asn), str(tmp_path / "x_i2d.asdf"), "--single", "true"]) == 1


def test_cli_reports_a_too_small_memory_allowance_in_one_line(tmp_path, caplog):
    models, _ = dithered_field(noise=False, dithers=DITHERS[:1])
    asn = write_inputs(tmp_path, models)
    output = tmp_path / "out_i2d.asdf"
    assert cli.run(resample.main, [str(asn), str(output), "--allowed-memory", "1e-12"]) == 1
    assert "allowed_memory" in caplog.text and not output.exists()


# ---------------------------------------------------------------- parity with romancal (peer extra)

@pytest.mark.peer
def test_parity_with_romancal_resample_on_the_same_grid(field, tmp_path, monkeypatch):
    """romancal 1.1 ResampleStep on the dithered field, onto our grid, with the exact pixel map."""
    pytest.importorskip("romancal")
    from romancal.resample import ResampleStep

    models, _, _ = field
    ours, = run(models, weight_type="ivm")          # romancal's default (ours is ivm-smed, which it lacks)
    monkeypatch.setenv("STPIPE_DISABLE_CRDS_STEPPARS", "true")
    asdf.AsdfFile({"wcs": ours.meta.wcs}).write_to(tmp_path / "grid.asdf")
    asn = write_inputs(tmp_path, models)
    with warnings.catch_warnings():
        # romancal leaves its input files to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        peer = ResampleStep.call(str(asn), output_wcs=str(tmp_path / "grid.asdf"), pixmap_stepsize=1,
                                 fillval="NaN", good_bits="~DO_NOT_USE+NON_SCIENCE", include_var_flat=True,
                                 resample_on_skycell=False)
        gc.collect()
    covered = np.asarray(ours.weight) > 0
    assert covered.mean() > 0.8
    np.testing.assert_array_equal(np.asarray(ours.context), np.asarray(peer.context))
    data, peer_data = np.asarray(ours.data)[covered], np.asarray(peer.data)[covered]
    assert np.max(np.abs(data - peer_data)) <= 1e-5 * np.max(np.abs(peer_data))
    # Weights and variances agree to the float16 precision of the inputs' variance arrays.
    for name in ("weight", "var_rnoise", "var_poisson", "err"):
        ratio = np.asarray(ours[name])[covered] / np.asarray(peer[name])[covered]
        assert np.max(np.abs(ratio - 1)) < 1e-3, name


def test_help_runs_as_a_script():
    result = subprocess.run([sys.executable, str(Path(resample.__file__)), "--help"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0 and "--pixel-scale-ratio" in result.stdout
