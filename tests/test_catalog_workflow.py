"""The workflow's Level 3 catalogs: a campaign of two filters on sky cells makes a catalog of
every mosaic, a multiband catalog of every cell mosaicked in both filters, and their quicklooks."""

from pathlib import Path

from romanpipe.catalogs import catalog_columns

import numpy as np
import pandas as pd
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels
from scipy.spatial import cKDTree

import multiband_catalog
from test_workflow import snakemake
from wfisim.campaign import CampaignConfig, simulate_campaign

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow")]

SKYMAP = {"pixel_scale": 0.11, "nxy_skycell": 200, "border": 10, "region_deg": 5.0}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("catalogs")
    simulate_campaign(CampaignConfig.from_mapping({
        "detectors": ["WFI01"], "filters": ["F158", "F087"], "exposures_per_filter": 2,
        "dithers": [[0.0, 0.0], [2.5, 1.5]], "size": 128, "stars": 60, "saturating_stars": 0, "seed": 17,
        "skymap": SKYMAP,
    }), out)
    result = snakemake(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_every_mosaic_has_its_catalog(campaign):
    mosaics = sorted((campaign / "results" / "mosaics").glob("*_i2d.asdf"))
    assert {path.name.rsplit("_", 2)[-2] for path in mosaics} == {"f158", "f087"}
    for mosaic in mosaics:
        base = mosaic.name.removesuffix("_i2d.asdf")
        table = pd.read_parquet(mosaic.with_name(f"{base}_cat.parquet"))
        assert list(table.columns) == catalog_columns(fit_psf=True)
        with rdm.open(mosaic.with_name(f"{base}_segm.asdf")) as segmentation:
            assert isinstance(segmentation, datamodels.MosaicSegmentationMapModel)
            assert set(np.unique(segmentation.data)) - {0} == set(table["label"])
        assert (campaign / "results" / "quicklook" / f"{base}_i2d.png").is_file()


def test_each_cell_in_two_filters_has_one_multiband_catalog(campaign):
    mosaics = {path.name.removesuffix("_i2d.asdf")
               for path in (campaign / "results" / "mosaics").glob("*_i2d.asdf")}
    cells = {name.rpartition("_")[0] for name in mosaics}
    cells = {cell for cell in cells if {f"{cell}_f087", f"{cell}_f158"} <= mosaics}
    assert cells
    made = {path.name.removesuffix("_cat.parquet")
            for path in (campaign / "results" / "multiband").glob("*_cat.parquet")}
    assert made == cells
    biggest = max(cells, key=lambda cell: len(pd.read_parquet(campaign / "results" / "mosaics" /
                                                              f"{cell}_f158_cat.parquet")))
    table = pd.read_parquet(campaign / "results" / "multiband" / f"{biggest}_cat.parquet")
    assert list(table.columns) == multiband_catalog.catalog_columns(["F158", "F087"], fit_psf=True)
    assert table["label"].is_unique and len(table) >= 10
    # Forced photometry in F158 measures what the F158 mosaic's own catalog measures.
    single = pd.read_parquet(campaign / "results" / "mosaics" / f"{biggest}_f158_cat.parquet")
    distance, index = cKDTree(single[["x_psf", "y_psf"]].to_numpy()).query(
        table[["x_psf_f158", "y_psf_f158"]].to_numpy())
    bright = (distance < 0.1) & (table["psf_f158_flux"] / table["psf_f158_flux_err"] > 30).to_numpy()
    assert bright.sum() >= 5
    ratio = table["psf_f158_flux"].to_numpy()[bright] / single["psf_flux"].to_numpy()[index[bright]]
    assert abs(np.median(ratio) - 1) < 0.01
    assert (campaign / "results" / "quicklook" / f"{biggest}_multiband.png").is_file()
    again = snakemake(campaign, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
