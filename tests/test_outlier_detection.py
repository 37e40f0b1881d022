"""outlier_detection: the median with nlow/nhigh, the derivative and the two-pass rule by hand;
injected cosmic rays in a dithered star field found (>= 95 %) without flagging stars (< 0.1 %);
the on-disk (section by section) and in-memory medians agree flag for flag; the CLI end to end.

The field is test_resample's: two 128 x 128 detectors seen in four exposures with sub-pixel
dithers, Gaussian stars (sigma 1.2 px) and a 0.3 MJy/sr sky recorded by skymatch but not
subtracted (were it not added back to the blot, every pixel would be a 10-sigma outlier).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from romanpipe import cli
from romanpipe.drizzle_models import exposure_from_model
from romanpipe.params import step_defaults
from romanpipe.products import set_cal_step
from romanpipe.resample_setup import OutputTooLargeError

import numpy as np
import pytest
import roman_datamodels as rdm
from scipy import ndimage

import outlier_detection
from footprints import pixel_sky, sees
from outlier_detection import abs_derivative, clipped_median, flag_outliers, outlier_mask, sectioned_median
from test_resample import (
    DETECTOR,
    PIXEL_AREA,
    dithered_field,
    image_model,
    pixelated_stars,
    tan_gwcs,
    write_inputs,
)

OUTLIER = 2**7
DNU = 1
STAR_PIXEL = 0.1     # MJy/sr of star light above which a pixel belongs to a star


def parameters(**changes):
    values = step_defaults("outlier_detection")
    values.update(changes)
    return values


def exposures_of(models):
    return [exposure_from_model(m, m.meta.filename) for m in models]


def pixels(mask):
    """(row, column) of the True pixels, sorted."""
    return sorted(tuple(index) for index in np.argwhere(mask).tolist())


def masks(outliers, shape=(DETECTOR, DETECTOR)):
    result = []
    for indices in outliers:
        mask = np.zeros(int(np.prod(shape)), bool)
        mask[indices] = True
        result.append(mask.reshape(shape))
    return result


# ---------------------------------------------------------------- kernels by hand

def test_clipped_median_drops_nlow_and_nhigh_of_the_finite_values():
    stack = np.array([[1.0, 5.0], [2.0, np.nan], [3.0, 7.0], [100.0, np.nan], [np.nan, np.nan]],
                     np.float32)[:, :, None]
    assert clipped_median(stack)[:, 0].tolist() == [2.5, 6.0]
    # Pixel 0: 1, 2, 3, 100 less the lowest and highest is 2, 3; pixel 1 keeps nothing of 5, 7.
    result = clipped_median(stack, nlow=1, nhigh=1)[:, 0]
    assert result[0] == 2.5 and np.isnan(result[1])
    assert clipped_median(stack, nlow=0, nhigh=1)[0, 0] == 2.0       # 1, 2, 3


def test_sectioned_median_equals_the_median_of_the_whole_stack(monkeypatch):
    rng = np.random.default_rng(1)
    images = [rng.normal(size=(37, 23)).astype(np.float32) for _ in range(5)]
    images[2][rng.random((37, 23)) < 0.3] = np.nan
    monkeypatch.setattr(outlier_detection, "SECTION_BYTES", 4 * 23 * 3)    # 3 rows per section
    expected = np.nanmedian(np.stack(images), axis=0)
    np.testing.assert_array_equal(sectioned_median(images, 0, 0), clipped_median(np.stack(images)))
    np.testing.assert_allclose(sectioned_median(images, 0, 0), expected, rtol=1e-6)


def test_derivative_is_the_largest_difference_with_the_four_neighbours():
    image = np.array([[0, 0, 0], [0, 4, 1], [0, 0, np.nan]], np.float32)
    expected = np.array([[0, 4, 1], [4, 4, 3], [0, 4, np.nan]], np.float32)
    np.testing.assert_array_equal(abs_derivative(image), expected)


def test_two_pass_rule_flags_detections_and_their_weaker_neighbours_within_grow():
    blot = np.zeros((7, 7), np.float32)
    err = np.ones((7, 7), np.float32)
    data = blot.copy()
    data[3, 3] = 10.0       # > 4 sigma: detected
    data[3, 4] = 3.5        # between the passes: flagged only as a neighbour
    data[3, 6] = 3.5        # same value, 3 px away: outside grow=1
    data[0, 0] = 3.9        # under 4 sigma and next to no detection
    rule = {"snr": (4.0, 3.0), "scale": (0.5, 0.4)}
    flagged = outlier_mask(data, err, blot, grow=1, **rule)
    assert pixels(flagged) == [(3, 3), (3, 4)]
    wide = outlier_mask(data, err, blot, grow=3, **rule)
    assert pixels(wide) == [(0, 0), (3, 3), (3, 4), (3, 6)]
    assert pixels(outlier_mask(data, err, blot, grow=0, **rule)) == [(3, 3)]
    # A steep blot raises the threshold by scale * derivative: 10 < 4 + 0.5 * 20.
    steep = blot.copy()
    steep[3, 2] = 20.0
    assert not outlier_mask(data, err, steep, grow=0, **rule)[3, 3]
    # The background is added to the blot before comparing.
    assert not outlier_mask(data + 100, err, blot, grow=0, background=100.0, **rule)[0, 0]


# ---------------------------------------------------------------- the dithered field with cosmic rays

def inject_cosmic_rays(models, hit_exposures=(1, 3), per_image=80, seed=11):
    """Single pixels and two-pixel tracks of 5..500 MJy/sr (log-uniform) in the exposures listed."""
    rng = np.random.default_rng(seed)
    truth = []
    for index, model in enumerate(models):
        hits = np.zeros(model.data.shape, bool)
        if index // 2 in hit_exposures:
            data = np.array(model.data)
            rows, cols = rng.integers(0, DETECTOR, per_image), rng.integers(0, DETECTOR - 1, per_image)
            amplitudes = np.exp(rng.uniform(np.log(5), np.log(500), per_image))
            tracks = rng.random(per_image) < 0.3
            for row, col, amplitude, track in zip(rows, cols, amplitudes, tracks, strict=True):
                data[row, col] += amplitude
                hits[row, col] = True
                if track:
                    data[row, col + 1] += 0.5 * amplitude
                    hits[row, col + 1] = True
            model.data = data
        truth.append(hits)
    return truth


def coverage(models, index, margin=1.0):
    """How many exposures see each pixel of image ``index`` (away from their detector edges)."""
    ra, dec = pixel_sky(models[index])
    count = np.zeros((DETECTOR, DETECTOR), int)
    for exposure in range(len(models) // 2):
        detectors = models[2 * exposure:2 * exposure + 2]
        count += np.logical_or.reduce([sees(model, ra, dec, margin) for model in detectors])
    return count


def field_of(psf_sigma):
    """The dithered field with cosmic rays in two exposures: models, hit masks, star masks."""
    models, (star_ra, star_dec, flux) = dithered_field(seed=5, star_spacing=40.0, psf_sigma=psf_sigma)
    truth = inject_cosmic_rays(models)
    stars = []
    for model in models:
        x, y = model.meta.wcs.backward_transform(star_ra, star_dec)
        stars.append(pixelated_stars(model.data.shape, x, y, flux / PIXEL_AREA, psf_sigma) > STAR_PIXEL)
    return models, truth, stars


@pytest.fixture(scope="module")
def field_with_cosmic_rays():
    return field_of(psf_sigma=1.2)


@pytest.fixture(scope="module")
def flags_in_memory(field_with_cosmic_rays):
    models, _, _ = field_with_cosmic_rays
    return masks(flag_outliers(exposures_of(models), parameters(in_memory=True)))


def cosmic_rays_found(field, flags):
    """Fraction of the hits flagged where three or more exposures overlap (with fewer the
    median cannot reject a cosmic ray), and how many there were."""
    models, truth, _ = field
    found = total = 0
    for index, (hits, flagged) in enumerate(zip(truth, flags, strict=True)):
        measurable = hits & (coverage(models, index) >= 3)
        total += measurable.sum()
        found += (measurable & flagged).sum()
    return found / total, total


def flagged_fractions(field, flags):
    """Fractions of star pixels and of clean sky pixels flagged, away from the hits, and the
    number of star pixels."""
    models, truth, stars = field
    star_pixels = star_flags = sky_pixels = sky_flags = 0
    for index, (hits, on_star, flagged) in enumerate(zip(truth, stars, flags, strict=True)):
        away = ~ndimage.binary_dilation(hits, iterations=2) & (coverage(models, index) >= 3)
        star_pixels += (on_star & away).sum()
        star_flags += (on_star & away & flagged).sum()
        sky_pixels += (~on_star & away).sum()
        sky_flags += (~on_star & away & flagged).sum()
    return star_flags / star_pixels, sky_flags / sky_pixels, star_pixels


def test_cosmic_rays_are_flagged_where_three_or_more_exposures_overlap(field_with_cosmic_rays,
                                                                       flags_in_memory):
    fraction, total = cosmic_rays_found(field_with_cosmic_rays, flags_in_memory)
    assert total > 200
    assert fraction >= 0.95


def test_stars_and_clean_sky_are_not_flagged(field_with_cosmic_rays, flags_in_memory):
    on_stars, on_sky, star_pixels = flagged_fractions(field_with_cosmic_rays, flags_in_memory)
    assert star_pixels > 3000
    assert on_stars < 0.001
    assert on_sky < 0.001


@pytest.mark.parametrize("weight_type", ["ivm-sky", "ivm-smed"])
def test_sky_variance_weights_find_the_cosmic_rays_and_spare_the_stars(field_with_cosmic_rays, weight_type):
    """The grouped mosaics drizzled with resample's sky-variance weights (romanpipe.drizzling)."""
    models, _, _ = field_with_cosmic_rays
    flags = masks(flag_outliers(exposures_of(models), parameters(in_memory=True, weight_type=weight_type)))
    fraction, total = cosmic_rays_found(field_with_cosmic_rays, flags)
    on_stars, on_sky, _ = flagged_fractions(field_with_cosmic_rays, flags)
    assert total > 200 and fraction >= 0.95
    assert on_stars < 0.001 and on_sky < 0.001


def test_a_finer_median_grid_spares_undersampled_star_cores():
    """Stars of 1.3 px FWHM (Roman's at F087-F158): the documented grid and scale flag their cores;
    the median at half the pixel scale with scale 1.0 0.8 (the workflow's configuration) does not,
    and still finds the cosmic rays."""
    field = field_of(psf_sigma=0.55)
    exposures = exposures_of(field[0])
    documented_flags = masks(flag_outliers(exposures, parameters(in_memory=True)))
    assert flagged_fractions(field, documented_flags)[0] > 0.01
    workflow_settings = parameters(in_memory=True, pixel_scale_ratio=0.5, scale="1.0 0.8")
    finer = masks(flag_outliers(exposures, workflow_settings))
    on_stars, on_sky, star_pixels = flagged_fractions(field, finer)
    assert star_pixels > 1000
    assert on_stars < 0.001
    assert on_sky < 0.001
    assert cosmic_rays_found(field, finer)[0] >= 0.95


def test_on_disk_sections_and_in_memory_give_identical_flags(field_with_cosmic_rays, flags_in_memory,
                                                             tmp_path, monkeypatch):
    models, _, _ = field_with_cosmic_rays
    seen = []
    median = outlier_detection.sectioned_median

    def spy(images, nlow, nhigh):
        seen.append({type(image) for image in images})
        return median(images, nlow, nhigh)

    monkeypatch.setattr(outlier_detection, "sectioned_median", spy)
    on_disk = masks(flag_outliers(exposures_of(models), parameters(in_memory=False), scratch_dir=tmp_path))
    assert seen == [{np.memmap}]
    for disk, memory in zip(on_disk, flags_in_memory, strict=True):
        np.testing.assert_array_equal(disk, memory)
    assert not any(tmp_path.iterdir())                # the grouped mosaics were removed


def test_nlow_nhigh_and_unresampled_comparison_find_the_same_hits():
    # Five exposures at one pointing: a cosmic ray at the same pixel of three of them is the
    # median there, so the two clean images get flagged instead; nhigh=2 drops it.
    wcs = tan_gwcs((16, 16), (10.0, 20.0), 0.0, (32, 32))
    rng = np.random.default_rng(2)
    models = []
    for k in range(5):
        data = 1.0 + rng.normal(0, 0.005, (32, 32))
        if k in (1, 2, 3):
            data[10, 10] += 50.0
        if k == 4:
            data[20, 5] += 30.0
        models.append(image_model(data, wcs, name=f"i{k}", observation_id=f"e{k}",
                                  var_rnoise=np.full((32, 32), 1e-4)))
    exposures = exposures_of(models)
    for resample_data in (False, True):
        flags = masks(flag_outliers(exposures, parameters(resample_data=resample_data, nhigh=2)), (32, 32))
        assert [pixels(f) for f in flags] == [[], [(10, 10)], [(10, 10)], [(10, 10)], [(20, 5)]]
    plain = masks(flag_outliers(exposures, parameters(resample_data=False, weight_type=None)), (32, 32))
    assert [bool(f[10, 10]) for f in plain] == [True, False, False, False, True]


def test_allowed_memory_too_small_raises(field_with_cosmic_rays):
    models, _, _ = field_with_cosmic_rays
    with pytest.raises(OutputTooLargeError):
        flag_outliers(exposures_of(models), parameters(allowed_memory=1e-12))


# ---------------------------------------------------------------- command line

def test_cli_flags_outliers_in_every_member_and_writes_the_association(tmp_path):
    models, _ = dithered_field(seed=5, noise=True)
    truth = inject_cosmic_rays(models, per_image=20)
    asn = write_inputs(tmp_path, models)
    output = tmp_path / "r00001-a3001_field_outlier_detection_asn.json"
    assert cli.run(outlier_detection.main, [str(asn), str(output), "--save-intermediate-results", "true",
                                            "--snr", "5.0 4.0", "--in-memory", "false"]) == 0
    listed = [m["expname"] for m in json.loads(output.read_text())["products"][0]["members"]]
    assert listed == [m.meta.filename.replace("_cal", "_outlier_detection") for m in models]
    found = 0
    for name, hits in zip(listed, truth, strict=True):
        with rdm.open(tmp_path / name) as product:
            assert product.meta.cal_step.outlier_detection == "COMPLETE"
            assert product.meta.outlier_detection.good_bits == "0"
            flagged = (product.dq & (OUTLIER | DNU)) == (OUTLIER | DNU)
            found += (flagged & hits).sum()
    assert found >= 0.8 * sum(h.sum() for h in truth)
    # Intermediate products: a grouped mosaic per exposure, the median, a blot per member.
    for path in sorted(tmp_path.glob("*_outlier_i2d.asdf")) + sorted(tmp_path.glob("*_median.asdf")):
        with rdm.open(path) as mosaic:
            assert mosaic.meta.model_type == "MosaicModel"
    assert len(list(tmp_path.glob("*_outlier_i2d.asdf"))) == 4
    assert [p.name for p in tmp_path.glob("*_median.asdf")] == ["r00001-a3001_field_a3001_median.asdf"]
    blots = sorted(tmp_path.glob("*_blot.asdf"))
    assert len(blots) == len(models)
    with rdm.open(blots[0]) as blot:
        # The blot is the star field without the sky level (the median is sky-subtracted).
        assert np.nanmax(blot.data) > 50 and abs(np.nanmedian(blot.data)) < 0.05
    assert not list(tmp_path.glob(".drizzle.*"))


def test_cli_skips_a_single_member_association(tmp_path):
    models, _ = dithered_field(dithers=[(0.0, 0.0, 0.0)])
    asn = write_inputs(tmp_path, models[:1])
    output = tmp_path / "out_asn.json"
    assert cli.run(outlier_detection.main, [str(asn), str(output)]) == 0
    name, = [m["expname"] for m in json.loads(output.read_text())["products"][0]["members"]]
    with rdm.open(tmp_path / name) as product:
        assert product.meta.cal_step.outlier_detection == "SKIPPED"
        np.testing.assert_array_equal(product.dq, models[0].dq)


# ---------------------------------------------------------------- parity with romancal (peer extra)

@pytest.mark.peer
def test_parity_with_romancal_outlier_detection(field_with_cosmic_rays, tmp_path, monkeypatch):
    """romancal 1.1 OutlierDetectionStep on the same field with its own snr/scale/weights.

    romancal builds its own grid (from meta.wcsinfo) and blots linearly, so flags agree
    statistically, not pixel for pixel.
    """
    pytest.importorskip("romancal")
    from romancal.outlier_detection import OutlierDetectionStep

    models, truth, _ = field_with_cosmic_rays
    monkeypatch.setenv("STPIPE_DISABLE_CRDS_STEPPARS", "true")
    copies = []
    for model in models:
        copy = model.copy()
        copy.meta.wcsinfo.ra_ref, copy.meta.wcsinfo.dec_ref = (float(v) for v in model.meta.wcs(63.5, 63.5))
        copy.meta.wcsinfo.roll_ref, copy.meta.wcsinfo.v3yangle, copy.meta.wcsinfo.vparity = 0.0, 0.0, -1
        set_cal_step(copy, "flux", "COMPLETE")
        copies.append(copy)
    asn = write_inputs(tmp_path, copies)
    common = {"snr": "5.0 4.0", "scale": "1.2 0.7", "good_bits": "~DO_NOT_USE", "weight_type": "ivm"}
    ours = masks(flag_outliers(exposures_of(models), parameters(in_memory=True, **common)))
    library = OutlierDetectionStep.call(str(asn), resample_on_skycell=False, pixmap_stepsize=1,
                                        in_memory=True, **common)
    theirs = []
    with library:
        for index in range(len(library)):
            model = library.borrow(index)
            theirs.append((np.asarray(model.dq) & OUTLIER) != 0)
            library.shelve(model, index, modify=False)
    found_ours = found_theirs = total = agree = 0
    for index, hits in enumerate(truth):
        measurable = hits & (coverage(models, index) >= 3)
        total += measurable.sum()
        found_ours += (measurable & ours[index]).sum()
        found_theirs += (measurable & theirs[index]).sum()
        agree += (ours[index] == theirs[index]).mean() / len(truth)
    assert found_ours / total >= 0.95 and found_theirs / total >= 0.95
    assert abs(found_ours - found_theirs) <= 0.02 * total
    assert agree > 0.999


def test_help_runs_as_a_script():
    result = subprocess.run([sys.executable, str(Path(outlier_detection.__file__)), "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "--save-intermediate-results" in result.stdout
