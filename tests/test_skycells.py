"""The sky map: the SKYCELLS factory, the cells a footprint touches, and mosaics on a cell's grid."""

import json

from romanpipe.association import read_association
from romanpipe.products import write_atomic
from romanpipe.skycells import SkyCell, SkyMap, association_cell, cell_name, cell_place

import numpy as np
import pandas as pd
import pytest
from spherical_geometry.polygon import SphericalPolygon

import associate
import resample
from test_associate import cal_file
from test_resample import FIELD_CENTRE, dithered_field, parameters
from wfisim.skymap import Tessellation, make_skycells

# Cells of 400 pixels of 0.11" (44"), 20 shared with each neighbour.
TESS = Tessellation(pixel_scale=0.11, nxy_skycell=400, border=20, region_deg=4.0)
BOX = ((9.97, 10.03), (19.97, 20.03))


@pytest.fixture(scope="module")
def skymap_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("skymap") / "roman_wfi_skycells_0001.asdf"
    write_atomic(make_skycells(*BOX, tessellation=TESS), path)
    return path


@pytest.fixture(scope="module")
def skymap(skymap_path):
    return SkyMap.read(skymap_path)


def square(ra, dec, side):
    """POLYGON ICRS of a square ``side`` degrees across (on the sky) centred at (ra, dec)."""
    half_ra, half_dec = side / 2 / np.cos(np.radians(dec)), side / 2
    corners = [(ra - half_ra, dec - half_dec), (ra + half_ra, dec - half_dec),
               (ra + half_ra, dec + half_dec), (ra - half_ra, dec + half_dec)]
    return "POLYGON ICRS " + " ".join(f"{a:.9f} {d:.9f}" for a, d in corners)


def next_column(skymap, cell):
    """The name of the cell right of ``cell`` (next column, same row) in its region."""
    column, row = cell_place(cell.name)
    return cell_name(cell.ra_tangent, cell.dec_tangent, column + 1, row)


def test_names_follow_romancal_and_cells_sit_in_their_region(skymap):
    regions = skymap.regions
    assert len(regions) == 1  # the box lies inside one projection region (band 18-22 deg)
    region = regions[0]
    assert region["dec_min"] == 18.0 and region["dec_max"] == 22.0 and region["dec_tangent"] == 20.0
    for name in skymap.names:
        cell = skymap.cell(name)
        column = round((region["x_tangent"] - cell.x_tangent) / TESS.step)
        row = round((region["y_tangent"] - cell.y_tangent) / TESS.step)
        # e.g. 010p20x05y07: the region's tangent point in whole degrees, the cell's column and row
        assert name == cell_name(region["ra_tangent"], region["dec_tangent"], column, row)
        assert name.startswith(f"{round(region['ra_tangent']):03d}p20x")
    assert cell_name(270.4, -65.6, 3, 12) == "270m66x03y12" and cell_place("270m66x03y12") == (3, 12)
    assert cell_place("010p20x1234y567") == (1234, 567)
    with pytest.raises(ValueError, match="sky-cell name"):
        cell_place("r00001_p_full")


def test_neighbouring_cells_share_their_border_pixels_exactly(skymap):
    cell = skymap.cell(skymap.names[0])
    right = SkyCell(**{**cell.__dict__, "name": "right", "x_tangent": cell.x_tangent - TESS.step})
    assert right.name.startswith("right")
    x, y = np.meshgrid(np.arange(TESS.border), np.arange(0, TESS.nxy_skycell, 7), indexing="xy")
    # The right neighbour's first `border` columns are this cell's last ones, pixel for pixel.
    ra_a, dec_a = cell.wcs()(x + TESS.step, y)
    ra_b, dec_b = right.wcs()(x, y)
    np.testing.assert_allclose(ra_a, ra_b, rtol=0, atol=1e-11)
    np.testing.assert_allclose(dec_a, dec_b, rtol=0, atol=1e-11)
    # and that neighbour is the map's own cell of the next column
    neighbour = skymap.cell(next_column(skymap, cell))
    assert neighbour.x_tangent == cell.x_tangent - TESS.step and neighbour.y_tangent == cell.y_tangent


def test_cells_have_the_configured_pixel_scale_and_north_up(skymap):
    wcs = skymap.cell(skymap.names[4]).wcs()
    c = TESS.nxy_skycell / 2
    ra, dec = wcs(np.array([c, c + 1, c]), np.array([c, c, c + 1]))
    east = (ra[1] - ra[0]) * np.cos(np.radians(dec[0])) * 3600
    north = (dec[2] - dec[0]) * 3600
    assert east == pytest.approx(0.11, rel=1e-3) and north == pytest.approx(0.11, rel=1e-3)
    assert abs(dec[1] - dec[0]) * 3600 < 1e-3  # +X along RA at orientation 0 (romancal's)


def test_two_areas_cut_the_same_cells(skymap):
    other = make_skycells((10.0, 10.05), (19.99, 20.01), tessellation=TESS)
    shared = set(other.skycells["name"]) & set(skymap.names)
    assert len(shared) >= 4
    rows = {str(r["name"]): r for r in other.skycells}
    for name in shared:
        assert tuple(rows[name]) == tuple(skymap.cells[skymap.names.index(name)])


def test_cells_touching_matches_a_brute_force_sampling(skymap):
    rng = np.random.default_rng(5)
    for _ in range(6):
        ra, dec = rng.uniform(9.99, 10.01), rng.uniform(19.99, 20.01)
        region = square(ra, dec, rng.uniform(0.003, 0.02))
        found = set(skymap.cells_touching(region))
        # brute force: points filling the footprint, and which cells' pixel bounds hold them
        corners_ra, corners_dec = np.array(region.split()[2:], float).reshape(-1, 2).T
        u, v = np.meshgrid(np.linspace(0, 1, 60), np.linspace(0, 1, 60))
        sample_ra = corners_ra[0] + u * (corners_ra[1] - corners_ra[0])
        sample_dec = corners_dec[0] + v * (corners_dec[2] - corners_dec[0])
        expected = set()
        for name in skymap.names:
            x, y = skymap.cell(name).wcs().backward_transform(sample_ra, sample_dec)
            edge = TESS.nxy_skycell - 0.5
            if np.any((x >= -0.5) & (x <= edge) & (y >= -0.5) & (y <= edge)):
                expected.add(name)
        assert expected <= found
        # what sampling missed is a sliver: the footprint reaches within a sample step of the cell
        for name in found - expected:
            poly = skymap.polygon(name)
            assert poly.intersects_poly(SphericalPolygon.from_radec(corners_ra, corners_dec))


def test_a_footprint_inside_one_cells_core_touches_that_cell_only(skymap):
    cell = skymap.cell(skymap.names[5])
    c = (TESS.nxy_skycell - 1) / 2
    ra, dec = (float(v) for v in cell.wcs()(c, c))
    assert skymap.cells_touching(square(ra, dec, 0.005)) == [cell.name]  # 18" in a 44" cell


def test_wcs_info_round_trips_to_the_same_grid(skymap):
    cell = skymap.cell(skymap.names[2])
    again = SkyCell.from_wcs_info(json.loads(json.dumps(cell.wcs_info())))
    assert again == cell
    assert association_cell({"skycell_wcs_info": cell.wcs_info()}) == cell
    assert association_cell({"target": "none"}) is None
    with pytest.raises(ValueError, match="x0_projection"):
        SkyCell.from_wcs_info({k: v for k, v in cell.wcs_info().items() if k != "x0_projection"})


def test_a_damaged_map_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "bad.asdf"
    path.write_text("not asdf")
    with pytest.raises(associate.InputFileError, match="bad.asdf"):
        SkyMap.read(path)


def test_factory_refuses_a_box_wrapping_through_ra_zero():
    with pytest.raises(ValueError, match="ra_min < ra_max"):
        make_skycells((359.0, 1.0), (0.0, 1.0), tessellation=TESS)


# ------------------------------------------------------------ sky-cell associations

def skycell_index(folder, paths, skymap_path):
    output = folder / "associations.csv"
    status = associate.cli.run(associate.main, ["index", "--cal", *map(str, paths), "--output", str(output),
                                                "--skycells", str(skymap_path)])
    assert status == 0
    return pd.read_csv(output)


def test_one_association_per_program_cell_and_filter_named_as_romancal(tmp_path, skymap, skymap_path):
    small = square(10.0, 20.0, 0.004)
    paths = [cal_file(tmp_path, "e1_WFI01", ra=0, dec=0, s_region=small),
             cal_file(tmp_path, "e2_WFI01", ra=0, dec=0, element="F087",
                      s_region=square(10.001, 20.0, 0.004)),
             cal_file(tmp_path, "e3_WFI01", ra=0, dec=0, program=2, s_region=small)]
    table = skycell_index(tmp_path, paths, skymap_path)
    expected = []
    for path, program, element in zip(paths, (1, 1, 2), ("f158", "f087", "f158"), strict=True):
        with associate.open_model(path) as model:
            cells = skymap.cells_touching(model.meta.wcsinfo.s_region)
        assert cells
        expected += [f"r{program:05d}_p_full_{cell}_{element}" for cell in cells]
    assert sorted(table["asn"]) == sorted(expected)
    assert (table["asn"] == table["product"]).all()
    row = table.iloc[0]
    tree = json.loads(row.tree)
    cell = row.asn.split("_")[3]
    assert tree["target"] == cell and tree["skycell_wcs_info"] == skymap.cell(cell).wcs_info()
    assert tree["products"][0]["name"] == row.asn and tree["data_release_id"] == "p"
    output = tmp_path / "associations" / f"{row.asn}_asn.json"
    assert associate.cli.run(associate.main, ["write", "--tree", row.tree, "--output", str(output)]) == 0
    assert read_association(output).members()[0].resolve().parent == (tmp_path / "exposures").resolve()


def test_a_new_image_changes_only_the_associations_of_the_cells_it_touches(tmp_path, skymap, skymap_path):
    footprints = [square(10.0 + 0.004 * k, 20.0, 0.01) for k in range(3)] + [square(10.012, 20.004, 0.006)]
    first = [cal_file(tmp_path, f"e{k}_WFI01", ra=0, dec=0, s_region=footprints[k]) for k in range(3)]
    added = cal_file(tmp_path, "e9_WFI01", ra=0, dec=0, s_region=footprints[3])
    before = skycell_index(tmp_path, first, skymap_path).set_index("asn")
    after = skycell_index(tmp_path, [*first, added], skymap_path).set_index("asn")
    touched = {f"r00001_p_full_{cell}_f158" for cell in skymap.cells_touching(footprints[3])}
    changed = {asn for asn in after.index
               if asn not in before.index or after.loc[asn, "tree"] != before.loc[asn, "tree"]}
    assert changed == touched
    assert set(before.index) <= set(after.index)


# ------------------------------------------------------------ mosaics on a cell's grid

def run(models, cell, **changes):
    names = [m.meta.filename for m in models]
    return resample.resample_models(models, names, parameters(**changes), association_name="a_asn.json",
                                    cell=cell)


def test_resample_draws_on_the_cells_grid_and_neighbours_agree_on_shared_pixels():
    tess = Tessellation(pixel_scale=0.11, nxy_skycell=120, border=16, region_deg=4.0)
    models, _ = dithered_field(noise=False)
    ra, dec = FIELD_CENTRE
    sky = SkyMap.from_model(make_skycells((ra - 0.005, ra + 0.005), (dec - 0.003, dec + 0.003),
                                          tessellation=tess))
    left = sky.cell(sky.cells_touching(square(ra, dec, 0.0005))[0])
    right = sky.cell(next_column(sky, left))
    on = [run(models, cell, weight_type="exptime")[0] for cell in (left, right)]
    for cell, mosaic in zip((left, right), on, strict=True):
        assert mosaic.data.shape == (tess.nxy_skycell, tess.nxy_skycell)
        assert mosaic.meta.wcsinfo.skycell_name == cell.name
        np.testing.assert_allclose(mosaic.meta.wcs(10.0, 20.0), cell.wcs()(10.0, 20.0), rtol=0, atol=1e-12)
    shared_left = on[0].data[:, tess.step:]
    shared_right = on[1].data[:, :tess.border]
    filled = np.isfinite(shared_left) & np.isfinite(shared_right)
    assert filled.sum() > 0.5 * filled.size
    np.testing.assert_allclose(shared_left[filled], shared_right[filled], rtol=1e-5, atol=1e-9)
