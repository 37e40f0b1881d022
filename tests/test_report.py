"""The report's scripts: quicklook PNGs, the campaign provenance table, the benchmark table."""

import json

from romanpipe import cli
from romanpipe.dqflags import pixel

import numpy as np
import pandas as pd
import pytest
import roman_datamodels as rdm
from matplotlib.image import imread
from roman_datamodels import datamodels

import benchmark_table
import provenance_table
import quicklook


def image_file(path, flagged_block=True):
    model = datamodels.ImageModel.create_fake_data(shape=(40, 40))
    rng = np.random.default_rng(1)
    model.data = rng.normal(10.0, 1.0, (40, 40)).astype(np.float32)
    model.dq = np.zeros((40, 40), np.uint32)
    if flagged_block:
        model.dq[10:20, 10:20] = pixel.DO_NOT_USE | pixel.SATURATED
    model.meta.instrument.optical_element = "F158"
    model.meta.filename = path.name
    model.to_asdf(path)
    return path


def red_pixels(png) -> int:
    """Pixels of the quicklook's flag colour (strong red, little green or blue)."""
    rgb = imread(png)[..., :3]
    return int(((rgb[..., 0] > 0.8) & (rgb[..., 1] < 0.2) & (rgb[..., 2] < 0.2)).sum())


def test_quicklook_paints_flagged_pixels_red(tmp_path):
    flagged = image_file(tmp_path / "flagged_cal.asdf")
    clean = image_file(tmp_path / "clean_cal.asdf", flagged_block=False)
    assert cli.run(quicklook.main, [str(flagged), str(tmp_path / "flagged.png")]) == 0
    assert cli.run(quicklook.main, [str(clean), str(tmp_path / "clean.png")]) == 0
    # a 10 x 10 block of 40 x 40 shown on ~450 x 450 screen pixels: ~1/16 of the image area
    assert red_pixels(tmp_path / "flagged.png") > 5000
    assert red_pixels(tmp_path / "clean.png") == 0


def cyan_pixels(png) -> int:
    """Pixels of the colour the sources are circled in (matplotlib's tab:cyan, 23, 190, 207)."""
    rgb = imread(png)[..., :3]
    return int(((rgb[..., 0] < 0.25) & (rgb[..., 1] > 0.6) & (rgb[..., 2] > 0.7)).sum())


def test_quicklook_draws_a_catalogs_sources_and_their_magnitudes(tmp_path):
    image = image_file(tmp_path / "image_cal.asdf", flagged_block=False)
    catalog = tmp_path / "image_cat.parquet"
    pd.DataFrame({"x_centroid": [10.0, 30.0], "y_centroid": [10.0, 25.0], "x_psf": [10.2, 29.8],
                  "y_psf": [9.9, 25.1], "kron_abmag": [22.0, 24.5], "kron_abmag_err": [0.01, 0.1]}
                 ).to_parquet(catalog)
    assert cli.run(quicklook.main, [str(image), str(tmp_path / "plain.png")]) == 0
    assert cli.run(quicklook.main, [str(image), str(tmp_path / "drawn.png"), "--catalog", str(catalog)]) == 0
    assert cyan_pixels(tmp_path / "plain.png") == 0
    assert cyan_pixels(tmp_path / "drawn.png") > 40  # two circles of ~12 screen pixels
    assert imread(tmp_path / "drawn.png").shape[0] > imread(tmp_path / "plain.png").shape[0]  # the histogram
    view = quicklook.read_catalog(catalog)
    np.testing.assert_array_equal(view.x, [10.2, 29.8])  # the PSF positions
    assert list(view.magnitudes) == ["kron_abmag"]


def test_quicklook_of_a_multiband_catalog_has_one_histogram_per_filter(tmp_path):
    catalog = tmp_path / "cell_cat.parquet"
    pd.DataFrame({"x_centroid": [1.0], "y_centroid": [2.0], "kron_f087_abmag": [23.0],
                  "kron_f087_abmag_err": [0.1], "kron_f158_abmag": [22.5]}).to_parquet(catalog)
    view = quicklook.read_catalog(catalog)
    assert view.x.tolist() == [1.0] and list(view.magnitudes) == ["kron_f087_abmag", "kron_f158_abmag"]


def test_quicklook_refuses_a_table_that_is_no_catalog(tmp_path, capsys):
    image = image_file(tmp_path / "image_cal.asdf")
    table = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(table)
    output = tmp_path / "out.png"
    assert cli.run(quicklook.main, [str(image), str(output), "--catalog", str(table)]) != 0
    assert "other.parquet" in capsys.readouterr().err and not output.exists()


def test_a_large_image_is_drawn_from_one_sample_per_step_in_its_pixel_frame():
    """3000 x 2100 pixels, at most 1024 samples an axis: every third pixel, the middle one of
    each step of 3, drawn over the pixels it stands for."""
    data = np.arange(2100 * 3000, dtype=np.float32).reshape(2100, 3000)
    flagged = np.zeros(data.shape, bool)
    flagged[4, 7] = True  # a sampled pixel (rows and columns 1, 4, 7, ...)
    fig = quicklook.quicklook_figure(data, flagged, "title", "DN/s")
    ax = fig.axes[0]
    shown = ax.images[0].get_array()
    assert shown.shape == (700, 1000)
    assert shown[0, 0] == data[1, 1] and shown.data[1, 2] == data[4, 7]
    assert shown[699, 999] == data[2098, 2998]
    assert shown.mask[1, 2] and shown.mask.sum() == 1
    assert ax.images[0].get_extent() == [-0.5, 2999.5, -0.5, 2099.5]
    assert ax.get_xlim() == (-0.5, 2999.5) and ax.get_ylim() == (-0.5, 2099.5)


def test_unusable_pixels_of_a_mosaic_are_the_uncovered_ones():
    mosaic = datamodels.MosaicModel.create_fake_data(shape=(6, 6))
    mosaic.data = np.ones((6, 6), np.float32)
    mosaic.data[0, 0] = np.nan
    mosaic.weight = np.ones((6, 6), np.float32)
    mosaic.weight[5, :] = 0
    expected = np.zeros((6, 6), bool)
    expected[0, 0] = True
    expected[5, :] = True
    assert (quicklook.unusable_pixels(mosaic) == expected).all()


def test_quicklook_of_a_corrupt_file_fails_in_one_line(tmp_path, caplog):
    bad = tmp_path / "bad_cal.asdf"
    bad.write_bytes(b"#ASDF 1.0.0\nnot really")
    assert cli.run(quicklook.main, [str(bad), str(tmp_path / "bad.png")]) == 1
    assert not (tmp_path / "bad.png").exists()
    assert "bad_cal.asdf" in caplog.records[-1].getMessage()


def test_provenance_table_has_a_row_per_step_and_reference(tmp_path):
    path = image_file(tmp_path / "r_cal.asdf")
    with rdm.open(path) as model:
        model.meta["provenance"] = {
            "dq_init": {"code_revision": "abc123", "crds_context": "roman_0001.pmap",
                        "parameters": {"skip": False},
                        "references": {"mask": {"file": "roman_wfi_mask_0001.asdf", "sha256": "11"}}},
            "ramp_fit": {"code_revision": "abc123", "crds_context": "roman_0002.pmap",
                         "parameters": {"algorithm": "ols_cas22"},
                         "references": {"gain": {"file": "g.asdf", "sha256": "22"},
                                        "readnoise": {"file": "r.asdf", "sha256": "33"}}},
            "cal": {"code_revision": "abc123", "parameters": {}},
        }
        model.save(tmp_path / "with_provenance_cal.asdf")
    out = tmp_path / "provenance.csv"
    product = tmp_path / "with_provenance_cal.asdf"
    assert cli.run(provenance_table.main, [str(product), "--output", str(out)]) == 0
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(table.columns) == provenance_table.COLUMNS
    assert table[["step", "reftype", "reference", "sha256", "crds_context"]].values.tolist() == [
        ["dq_init", "mask", "roman_wfi_mask_0001.asdf", "11", "roman_0001.pmap"],
        ["ramp_fit", "gain", "g.asdf", "22", "roman_0002.pmap"],
        ["ramp_fit", "readnoise", "r.asdf", "33", "roman_0002.pmap"],
        ["cal", "", "", "", ""],
    ]
    assert json.loads(table.loc[1, "parameters"]) == {"algorithm": "ols_cas22"}
    assert set(table["product"]) == {"with_provenance_cal.asdf"}


def test_benchmark_table_lists_every_job_slowest_first(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    # A rule of one job per run (the pool) writes <rule>.tsv beside the rules' folders.
    for path, seconds in (("ramp_fit/e1.tsv", 7.5), ("dq_init/e1.tsv", 2.0), ("ramp_fit/e2.tsv", 9.0),
                          ("pool.tsv", 3.0)):
        (tmp_path / "benchmarks" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "benchmarks" / path).write_text(
            header + f"{seconds}\t0:00:0{int(seconds)}\t100.0\t200\t90\t95\t1\t2\t50\t{seconds / 2}\n")
    out = tmp_path / "benchmarks.csv"
    assert cli.run(benchmark_table.main, [str(tmp_path / "benchmarks"), "--output", str(out)]) == 0
    table = pd.read_csv(out)
    assert table[["rule", "job", "s", "cpu_time"]].values.tolist() == [
        ["ramp_fit", "e2", 9.0, 4.5], ["ramp_fit", "e1", 7.5, 3.75], ["pool", "pool", 3.0, 1.5],
        ["dq_init", "e1", 2.0, 1.0]]


def test_benchmark_table_adds_the_warm_workers_cpu_and_memory(tmp_path):
    """A job run warm: Snakemake measured its client (0.05 CPU s, 12 MB); its worker, logged by
    the warm server with the job's log file, used 3.2 CPU s and 1024 MB."""
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    logs = tmp_path / "logs"
    for rule in ("saturation", "linearity"):
        (logs / "benchmarks" / rule).mkdir(parents=True)
        (logs / "benchmarks" / rule / "e1.tsv").write_text(
            header + "4.0\t0:00:04\t12.0\t20\t9\t9\t0\t0\t1\t0.05\n")
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "abc.log").write_text(
        "2026-12-07T17:00:00Z server 1 ready in 2.0 s, 1500 module files\n"
        + json.dumps({"job": "saturation.py", "log": str(logs / "saturation" / "e1.log"), "exit": 0,
                      "cpu": 3.2, "max_rss_kb": 1024 * 1024}) + "\n"
        + json.dumps({"job": "pool.py", "log": str(tmp_path / "elsewhere.log"), "exit": 0, "cpu": 9.0,
                      "max_rss_kb": 1}) + "\n")
    out = tmp_path / "benchmarks.csv"
    assert cli.run(benchmark_table.main, [str(logs / "benchmarks"), "--output", str(out),
                                          "--warm", str(warm)]) == 0
    table = pd.read_csv(out).set_index("rule")
    assert table.loc["saturation", "cpu_time"] == pytest.approx(3.25)
    assert table.loc["saturation", "max_rss"] == pytest.approx(1024.0)
    # a job that ran plainly keeps Snakemake's figures
    assert table.loc["linearity", "cpu_time"] == pytest.approx(0.05)
    assert table.loc["linearity", "max_rss"] == pytest.approx(12.0)


def test_unusable_pixels_of_a_detection_image_are_those_no_filter_covered():
    segmentation = datamodels.MultibandSegmentationMapModel.create_fake_data(shape=(4, 4))
    detection = np.full((4, 4), 0.5, np.float32)
    detection[0, :] = 0.0  # detect() zeroes the pixels no filter could use
    segmentation["detection_image"] = detection
    assert (quicklook.unusable_pixels(segmentation) == (detection == 0)).all()
