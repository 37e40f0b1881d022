"""skymatch: the romancal documentation's two Examples tables by all four methods, statistics by
hand, overlaps on the sky, CLI.

Images are constant skies with tangent-plane GWCSs (0.11"/px, each its own tangent
point and a small roll), laid out in a common mosaic tangent plane as the documentation's
examples describe.
"""

import json

from romanpipe import dqflags
from romanpipe.association import asn_from_list, write_association
from romanpipe.products import set_cal_step

import numpy as np
import pytest
import roman_datamodels as rdm
from astropy import coordinates
from astropy import units as u
from astropy.modeling.models import AffineTransformation2D, Pix2Sky_TAN, RotateNative2Celestial, Shift
from gwcs import coordinate_frames as cf
from gwcs import wcs as gwcs_wcs
from roman_datamodels import datamodels

import skymatch
from skymatch import (
    SkyStatistic,
    footprint_polygon,
    overlap,
    polygon_pixel_mask,
    region_pixel_mask,
    sky_image,
    sky_levels,
)

SCALE = 0.11  # arcsec per pixel
SHAPE = (100, 100)
MOSAIC_CENTRE = (80.0, 30.0)
METHODS = ("local", "global", "match", "global+match")

# Seed, SkyMatch -> Examples: 6 images in a 2x3 mosaic, each overlapping its neighbours.
MOSAIC_2X3 = {
    "layout": [(0, 0), (80, 0), (160, 0), (0, 80), (80, 80), (160, 80)],
    "sky": [100, 120, 105, 110, 105, 115],
    "local": [100, 120, 105, 110, 105, 115],
    "global": [100, 100, 100, 100, 100, 100],
    "match": [0, 20, 5, 10, 5, 15],
    "global+match": [100, 120, 105, 110, 105, 115],
}
# ... and 7 images: a 2x2 mosaic and, far from it, 3 mutually overlapping images.
TWO_DISJOINT_MOSAICS = {
    "layout": [(0, 0), (80, 0), (0, 80), (80, 80), (600, 0), (680, 0), (640, 70)],
    "sky": [100, 120, 105, 110, 95, 90, 100],
    "local": [100, 120, 105, 110, 95, 90, 100],
    "global": [90, 90, 90, 90, 90, 90, 90],
    "match": [0, 20, 5, 10, 8.75, 3.75, 13.75],
    "global+match": [86.25, 106.25, 91.25, 96.25, 95, 90, 100],
}
TABLES = {"2x3 mosaic": MOSAIC_2X3, "two disjoint mosaics": TWO_DISJOINT_MOSAICS}


def tan_wcs(ra, dec, shape=SHAPE, roll_deg=0.0):
    """detector -> world: centre shift, CD matrix (east left, rolled), TAN projection at (ra, dec)."""
    nrows, ncols = shape
    roll = np.radians(roll_deg)
    cd = SCALE / 3600 * np.array([[-np.cos(roll), np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    transform = ((Shift(-(ncols - 1) / 2) & Shift(-(nrows - 1) / 2)) | AffineTransformation2D(cd)
                 | Pix2Sky_TAN() | RotateNative2Celestial(ra, dec, 180))
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    world = cf.CelestialFrame(reference_frame=coordinates.ICRS(), name="world")
    wcs = gwcs_wcs.WCS([(detector, transform), (world, None)])
    wcs.bounding_box = ((-0.5, ncols - 0.5), (-0.5, nrows - 0.5))
    return wcs


def mosaic_wcs(dx, dy, shape=SHAPE, roll_deg=0.0):
    """An image centred (dx, dy) mosaic pixels from the mosaic centre (its own tangent point)."""
    to_sky = Pix2Sky_TAN() | RotateNative2Celestial(*MOSAIC_CENTRE, 180)
    ra, dec = to_sky(-dx * SCALE / 3600, dy * SCALE / 3600)
    return tan_wcs(float(ra), float(dec), shape, roll_deg)


def layout_wcs(layout):
    return [mosaic_wcs(dx, dy, roll_deg=0.3 * k) for k, (dx, dy) in enumerate(layout)]


def constant_images(table, *, dq=None, data=None, dqbits="~DO_NOT_USE"):
    images = []
    for k, (wcs, sky) in enumerate(zip(layout_wcs(table["layout"]), table["sky"], strict=True)):
        pixels = np.full(SHAPE, sky, np.float32) if data is None else data[k]
        flags = np.zeros(SHAPE, np.uint32) if dq is None else dq[k]
        images.append(sky_image(pixels, flags, wcs, dqbits=dqbits, name=f"image{k}"))
    return images


@pytest.fixture(scope="module", params=list(TABLES))
def table_and_images(request):
    table = TABLES[request.param]
    return table, constant_images(table)


# ---------------------------------------------------------------- the documented examples

@pytest.mark.parametrize("method", METHODS)
def test_documented_examples_are_reproduced(table_and_images, method):
    table, images = table_and_images
    result = sky_levels(images, method, match_down=True)
    assert result.levels == pytest.approx(table[method], abs=1e-9)
    assert result.valid.all()


def test_match_up_matches_to_the_highest_sky():
    images = constant_images(MOSAIC_2X3)
    sky = np.array(MOSAIC_2X3["sky"], float)
    assert sky_levels(images, "match", match_down=False).levels == pytest.approx(sky - sky.max(), abs=1e-9)
    assert sky_levels(images, "global+match", match_down=False).levels == pytest.approx(sky, abs=1e-9)


def test_an_image_overlapping_no_other_has_no_match_level_but_a_global_one():
    table = {"layout": [(0, 0), (80, 0), (400, 400)], "sky": [100, 130, 90]}
    images = constant_images(table)
    matched = sky_levels(images, "match")
    assert matched.valid.tolist() == [True, True, False]
    assert matched.levels == pytest.approx([0, 30, 0], abs=1e-9)
    combined = sky_levels(images, "global+match")
    assert combined.valid.all()
    # The isolated image keeps all its 90 as remaining sky, the smallest: the global level.
    assert combined.levels == pytest.approx([90, 120, 90], abs=1e-9)


@pytest.mark.parametrize("flag, dqbits", [("DO_NOT_USE", "~DO_NOT_USE"),
                                          ("NON_SCIENCE", "~DO_NOT_USE+NON_SCIENCE")])
def test_flagged_outliers_change_nothing(flag, dqbits):
    rng = np.random.default_rng(7)
    table = MOSAIC_2X3
    data, dq = [], []
    for sky in table["sky"]:
        pixels = np.full(SHAPE, sky, np.float32)
        flags = np.zeros(SHAPE, np.uint32)
        hit = rng.random(SHAPE) < 0.05
        pixels[hit] = rng.choice([-5e3, 1e4], size=hit.sum())
        flags[hit] = dqflags.pixel[flag]
        data.append(pixels)
        dq.append(flags)
    # The mean without clipping: a single outlier let through would show.
    statistic = SkyStatistic("mean", nclip=0)
    images = constant_images(table, data=data, dq=dq, dqbits=dqbits)
    for method in METHODS:
        levels = sky_levels(images, method, statistic=statistic).levels
        assert levels == pytest.approx(table[method], abs=1e-6)
    unmasked = constant_images(table, data=data, dq=dq, dqbits=None)
    assert sky_levels(unmasked, "local", statistic=statistic).levels != pytest.approx(table["local"], abs=1)


# ---------------------------------------------------------------- statistics

def test_mean_and_median_after_range_cut_and_clipping_by_hand():
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    assert SkyStatistic("mean", nclip=0)(values) == (22.0, 5)
    assert SkyStatistic("median", nclip=0)(values) == (3.0, 5)
    # One clip at 1 sigma: mean 22, std sqrt(7610/4) = 43.62 keeps [-21.6, 65.6]: 1..4.
    assert SkyStatistic("mean", nclip=1, lsigma=1, usigma=1)(values) == (2.5, 4)
    assert SkyStatistic("median", nclip=1, lsigma=1, usigma=1)(values) == (2.5, 4)
    # The default 4 sigma keeps everything: 22 + 4 * 43.62 > 100.
    assert SkyStatistic("mean", nclip=5)(values) == (22.0, 5)
    assert SkyStatistic("mean", nclip=0, lower=2)(values) == (27.25, 4)
    assert SkyStatistic("mean", nclip=0, upper=3.5)(values) == (2.0, 3)
    assert SkyStatistic("mean", nclip=0, lower=200)(values) == (None, 0)
    # Each clip selects from all the values, as IRAF does: 10 +- 6.78 keeps 4, 9; then
    # 6.5 +- 3.54 takes 3 back in.
    mean, npix = SkyStatistic("mean", nclip=2, lsigma=1, usigma=1)(np.array([3.0, 4.0, 9.0, 17.0, 17.0]))
    assert mean == pytest.approx(16 / 3, abs=1e-12) and npix == 3


# A resolution of 1 over the range 0..4.5 makes int(4.5) + 1 = 5 bins of 4.5/4 = 1.125
# from 0 (IRAF's layout): counts 1, 2, 4, 3, 1.
HISTOGRAM_VALUES = np.array([0.0, 1.5, 1.5, 2.5, 2.5, 2.5, 2.5, 3.5, 3.5, 3.5, 4.5])
UNIT_RESOLUTION = 1 / HISTOGRAM_VALUES.std(ddof=1)


def test_mode_is_the_parabola_through_the_peak_bin_by_hand():
    sky, npix = SkyStatistic("mode", nclip=0, binwidth=UNIT_RESOLUTION)(HISTOGRAM_VALUES)
    # Peak bin 2 (4 counts), rise 4-2 = 2, fall 4-3 = 1: (2 + 0.5 + 0.5 * (2-1)/(2+1)) * 1.125.
    assert sky == pytest.approx(3.0, abs=1e-9) and npix == 11


def test_midpt_interpolates_the_cumulative_histogram_by_hand():
    sky, _ = SkyStatistic("midpt", nclip=0, binwidth=UNIT_RESOLUTION)(HISTOGRAM_VALUES)
    # Cumulative 1/11, 3/11, 7/11: half is reached in bin 2, (2 + (5.5 - 3) / 4) * 1.125.
    assert sky == pytest.approx(2.953125, abs=1e-9)


@pytest.mark.parametrize("skystat", ["mean", "median", "midpt", "mode"])
def test_a_constant_sky_is_found_exactly_by_every_statistic(skystat):
    assert SkyStatistic(skystat)(np.full(50, 105.0, np.float32)) == (105.0, 50)


# ---------------------------------------------------------------- footprints and overlaps

def test_pixel_centres_inside_a_polygon_left_and_bottom_edges_included():
    square = polygon_pixel_mask(np.array([1.0, 3.0, 3.0, 1.0]), np.array([1.0, 1.0, 3.0, 3.0]), (5, 5))
    expected = np.zeros((5, 5), bool)
    expected[1:3, 1:3] = True
    assert (square == expected).all()
    triangle = polygon_pixel_mask(np.array([-0.5, 4.5, -0.5]), np.array([-0.5, -0.5, 4.5]), (5, 5))
    assert (triangle == (np.add.outer(np.arange(5), np.arange(5)) < 4)).all()


def test_a_polygon_of_many_vertices_is_filled_row_block_by_row_block():
    # 100,000 vertices: the scan goes 40 rows at a time over these 200 rows.
    angle = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    mask = polygon_pixel_mask(99.5 + 80.3 * np.cos(angle), 99.5 + 80.3 * np.sin(angle), (200, 200))
    y, x = np.indices((200, 200))
    radius = np.hypot(x - 99.5, y - 99.5)
    decided = np.abs(radius - 80.3) > 1e-3
    assert (mask[decided] == (radius[decided] < 80.3)).all()


def test_pixels_outside_the_bounding_box_are_not_used():
    wcs = mosaic_wcs(0, 0)
    wcs.bounding_box = ((9.5, 50.5), (-3.0, 200.0))
    image = sky_image(np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.uint32), wcs)
    expected = np.zeros(SHAPE, bool)
    expected[:, 10:51] = True
    assert (image.good == expected).all()
    # The footprint is the box within the image: 41 x 100 pixels.
    assert image.footprint.area() == pytest.approx(41 * 100 * (SCALE / 3600 * np.pi / 180) ** 2, rel=1e-6)


@pytest.mark.parametrize("stepsize", [None, 10])
def test_footprint_is_the_bounding_box_on_the_sky(stepsize):
    polygon = footprint_polygon(mosaic_wcs(0, 0), SHAPE, stepsize)
    (ra, dec), = polygon.to_radec()
    assert len(ra) == (5 if stepsize is None else 4 * 10 + 1)
    side = SHAPE[0] * SCALE / 3600 * np.pi / 180
    assert polygon.area() == pytest.approx(side**2, rel=1e-6)


@pytest.mark.parametrize("stepsize", [None, 17])
def test_overlap_pixels_agree_with_a_per_pixel_wcs_test(stepsize):
    shapes = [(120, 100), (90, 130)]
    wcs_a = mosaic_wcs(0, 0, shapes[0], roll_deg=3.0)
    wcs_b = mosaic_wcs(61.3, 37.7, shapes[1], roll_deg=-11.0)
    a = sky_image(np.zeros(shapes[0], np.float32), np.zeros(shapes[0], np.uint32), wcs_a, stepsize=stepsize)
    b = sky_image(np.zeros(shapes[1], np.float32), np.zeros(shapes[1], np.uint32), wcs_b, stepsize=stepsize)
    region = overlap(a, b)
    for this, other in ((a, b), (b, a)):
        # Naive truth: every pixel centre of one image sent through both WCSs into the other.
        y, x = np.indices(this.data.shape)
        ox, oy = other.wcs.invert(*this.wcs(x, y, with_bounding_box=False), with_bounding_box=False)
        nrows, ncols = other.data.shape
        margin = np.minimum.reduce([ox + 0.5, ncols - 0.5 - ox, oy + 0.5, nrows - 0.5 - oy])
        decided = np.abs(margin) > 1e-6
        mask = region_pixel_mask(this, region)
        assert mask.sum() > 1000
        assert (mask[decided] == (margin[decided] > 0)).all()


def test_match_uses_only_the_pixels_inside_the_overlap():
    wcs_a, wcs_b = mosaic_wcs(0, 0, roll_deg=2.0), mosaic_wcs(70, 10, roll_deg=-5.0)
    y, x = np.indices(SHAPE)
    bx, by = wcs_b.invert(*wcs_a(x, y), with_bounding_box=False)
    in_b = (bx > -0.5) & (bx < SHAPE[1] - 0.5) & (by > -0.5) & (by < SHAPE[0] - 0.5)
    # A large bright "galaxy" fills image A outside the overlap.
    data_a = np.where(in_b, 100.0, 500.0).astype(np.float32)
    flags = np.zeros(SHAPE, np.uint32)
    images = [sky_image(data_a, flags, wcs_a), sky_image(np.full(SHAPE, 130, np.float32), flags, wcs_b)]
    statistic = SkyStatistic("mean", nclip=0)
    assert sky_levels(images, "match", statistic=statistic).levels == pytest.approx([0, 30], abs=1e-9)


def test_inputs_are_not_modified():
    images = constant_images(MOSAIC_2X3)
    before = [im.data.copy() for im in images]
    sky_levels(images, "global+match")
    assert all((im.data == old).all() for im, old in zip(images, before, strict=True))


# ---------------------------------------------------------------- command line

EXPOSURES = [f"r0000101001001001001_01101_000{k}_WFI01" for k in (1, 2, 3)]


def write_members(folder, layout, skies):
    names = []
    for exposure, wcs, sky in zip(EXPOSURES, layout_wcs(layout), skies, strict=True):
        model = datamodels.ImageModel.create_fake_data(shape=SHAPE)
        model.data = np.full(SHAPE, sky, np.float32)
        model.dq = np.zeros(SHAPE, np.uint32)
        model.meta.wcs = wcs
        name = f"{exposure}_flux.asdf"
        model.to_asdf(folder / name)
        names.append(name)
    return names


def write_asn(folder, names):
    return write_association(asn_from_list(names, product_name="r00001_p_full_F158"),
                             folder / "r00001_flux_asn.json")


def test_cli_writes_member_products_and_the_output_association(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    asn = write_asn(inputs, write_members(inputs, [(0, 0), (80, 0), (40, 70)], [100, 120, 105]))
    out = tmp_path / "out" / "r00001_skymatch_asn.json"
    status = skymatch.cli.run(skymatch.main, [str(asn), str(out), "--skymethod", "global+match",
                                              "--subtract", "true", "--stepsize", "25"])
    assert status == 0
    members = json.loads(out.read_text())["products"][0]["members"]
    assert [m["expname"] for m in members] == [f"{e}_skymatch.asdf" for e in EXPOSURES]
    for member, sky in zip(members, [100, 120, 105], strict=True):
        with rdm.open(out.parent / member["expname"]) as model:
            assert dict(model.meta.background) == {"level": pytest.approx(sky, abs=1e-9),
                                                   "method": "global+match", "subtracted": True}
            assert np.abs(model.data).max() < 1e-4
            assert model.meta.cal_step.skymatch == "COMPLETE"
            assert model.meta.provenance["skymatch"]["parameters"]["skymethod"] == "global+match"


def test_cli_default_match_leaves_the_data_alone(tmp_path):
    asn = write_asn(tmp_path, write_members(tmp_path, [(0, 0), (80, 0), (40, 70)], [100, 120, 105]))
    out = tmp_path / "skymatch_asn.json"
    assert skymatch.cli.run(skymatch.main, [str(asn), str(out)]) == 0
    for exposure, level, sky in zip(EXPOSURES, [0, 20, 5], [100, 120, 105], strict=True):
        with rdm.open(tmp_path / f"{exposure}_skymatch.asdf") as model:
            assert model.meta.background.level == pytest.approx(level, abs=1e-9)
            assert model.meta.background.method == "match" and model.meta.background.subtracted is False
            assert (model.data == sky).all()


def test_already_subtracted_input_refuses_a_second_subtraction(tmp_path, capsys):
    names = write_members(tmp_path, [(0, 0), (80, 0), (40, 70)], [100, 120, 105])
    with rdm.open(tmp_path / names[1]) as model:
        model.meta["background"] = {"level": 20.0, "method": "match", "subtracted": True}
        model.to_asdf(tmp_path / "again.asdf")
    (tmp_path / "again.asdf").replace(tmp_path / names[1])
    out = tmp_path / "skymatch_asn.json"
    assert skymatch.cli.run(skymatch.main, [str(write_asn(tmp_path, names)), str(out), "-q",
                                            "--subtract", "true"]) == 1
    assert "already subtracted" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("problem", ["missing member", "not json", "no members"])
def test_bad_association_is_one_line_exit_1_and_no_output(tmp_path, capsys, problem):
    names = write_members(tmp_path, [(0, 0), (80, 0), (40, 70)], [100, 120, 105])
    asn = write_asn(tmp_path, names)
    if problem == "missing member":
        (tmp_path / names[2]).unlink()
    elif problem == "not json":
        asn.write_text("{ this is not an association")
    else:
        asn.write_text(json.dumps({"products": [{"name": "p", "members": []}]}))
    out = tmp_path / "out" / "skymatch_asn.json"
    assert skymatch.cli.run(skymatch.main, [str(asn), str(out), "-q"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert (names[2] if problem == "missing member" else asn.name) in lines[0]
    assert not out.exists() and not list(tmp_path.glob("*_skymatch.asdf"))


def test_bad_parameter_is_refused(tmp_path, capsys):
    asn = write_asn(tmp_path, write_members(tmp_path, [(0, 0), (80, 0), (40, 70)], [100, 120, 105]))
    out = tmp_path / "skymatch_asn.json"
    assert skymatch.cli.run(skymatch.main, [str(asn), str(out), "-q", "--dqbits", "~NOT_A_FLAG"]) == 1
    assert "NOT_A_FLAG" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------- peer

def romancal_levels(models, **parameters):
    from romancal.datamodels import ModelLibrary
    from romancal.skymatch import SkyMatchStep

    # process() directly: run() would ask a CRDS server for the step's parameter reference.
    result = SkyMatchStep(**parameters).process(ModelLibrary(models))
    with result:
        levels = []
        for index, model in enumerate(result):
            levels.append(model.meta.background.level)
            result.shelve(model, index, modify=False)
    return np.array(levels)


def image_models(table, data):
    models = []
    for k, wcs in enumerate(layout_wcs(table["layout"])):
        model = datamodels.ImageModel.create_fake_data(shape=SHAPE)
        model.meta.filename = f"image{k}_cal.asdf"
        model.data = data[k]
        model.dq = np.zeros(SHAPE, np.uint32)
        model.meta.wcs = wcs
        set_cal_step(model, "flux", "COMPLETE")
        models.append(model)
    return models


@pytest.mark.peer
@pytest.mark.parametrize("table_name", list(TABLES))
def test_peer_romancal_also_reproduces_the_documented_tables_on_these_images(table_name):
    pytest.importorskip("romancal")
    table = TABLES[table_name]
    data = [np.full(SHAPE, sky, np.float32) for sky in table["sky"]]
    for method in METHODS:
        assert romancal_levels(image_models(table, data), skymethod=method) == pytest.approx(table[method],
                                                                                              abs=1e-9)


# romancal finds overlap pixels from polygon vertices rounded to whole pixels (gwcs.region):
# about 1.4 % of the overlap pixels differ here, at the edges, so noisy skies give levels a
# few thousandths of sigma apart. Its mode and midpt read histogram positions with the
# nominal bin width (ours with the actual one): up to one bin (0.1 sigma) apart per
# statistic, a few bins once least squares combine the small overlaps' statistics.
SIGMA = 2.0
PEER_TOLERANCE = {("mean", False): 0.01 * SIGMA, ("median", False): 0.01 * SIGMA,
                  ("mean", True): 0.01 * SIGMA, ("median", True): 0.01 * SIGMA,
                  ("mode", False): 0.1 * SIGMA, ("midpt", False): 0.1 * SIGMA,
                  ("mode", True): 0.3 * SIGMA, ("midpt", True): 0.3 * SIGMA}


@pytest.mark.peer
@pytest.mark.parametrize("table_name", list(TABLES))
@pytest.mark.parametrize("skystat", ["mean", "median", "mode", "midpt"])
def test_peer_romancal_on_noisy_skies_with_sources(table_name, skystat):
    pytest.importorskip("romancal")
    table = TABLES[table_name]
    rng = np.random.default_rng(11)
    data = []
    for sky in table["sky"]:
        pixels = rng.normal(sky, SIGMA, SHAPE).astype(np.float32)
        pixels[rng.random(SHAPE) < 0.01] += 300.0
        data.append(pixels)
    for method in METHODS:
        ours = sky_levels(constant_images(table, data=data), method, statistic=SkyStatistic(skystat)).levels
        peer = romancal_levels(image_models(table, data), skymethod=method, skystat=skystat)
        assert np.abs(ours - peer).max() < PEER_TOLERANCE[skystat, "match" in method], (method, ours, peer)
