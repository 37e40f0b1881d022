"""The benchmark harness (benchmarks/): comparison statistics, table formatting, parsed measurements."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench  # noqa: E402
import fidelity  # noqa: E402
import measure  # noqa: E402

TIME_V_REPORT = """\
\tCommand being timed: "python scripts/ramp_fit.py a b"
\tUser time (seconds): 7.25
\tSystem time (seconds): 0.50
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02.50
\tMaximum resident set size (kbytes): 2097152
"""


def test_parse_time_v_reads_minutes_and_kilobytes():
    figures = measure.parse_time_v(TIME_V_REPORT)
    assert figures == {"wall_s": 62.5, "user_s": 7.25, "system_s": 0.5, "max_rss_kb": 2097152.0}
    assert measure.cpu_seconds(figures) == 7.75


def test_parity_stats_in_units_of_the_error():
    ours = np.array([1.0, 2.0, 3.0, 4.0, np.nan, 6.0])
    theirs = np.array([1.0, 2.5, 2.0, 4.0, 5.0, 6.0])
    error = np.array([1.0, 0.5, 2.0, 1.0, 1.0, 0.0])  # the last pixel has no error: not compared
    stats = measure.parity_stats(ours, theirs, error, ours_dq=np.array([0, 1, 0, 0, 0, 0]),
                                 theirs_dq=np.zeros(6, int))
    # compared: |Δ|/σ = 0, 1, 0.5, 0 (the NaN and the zero-error pixels are left out)
    assert stats["pixels"] == 4
    assert stats["median"] == pytest.approx(0.25)
    assert stats["p999"] == pytest.approx(np.percentile([0, 1, 0.5, 0], 99.9))
    assert stats["dq_agreement"] == pytest.approx(5 / 6)


def test_parity_stats_usable_mask_and_no_dq():
    usable = np.array([False, True, True, False])
    stats = measure.parity_stats(np.arange(4.0), np.zeros(4), 2.0, usable=usable)
    assert stats["pixels"] == 2 and stats["median"] == pytest.approx(0.75) and np.isnan(stats["dq_agreement"])


def test_markdown_table_formats_numbers_and_escapes_bars():
    table = measure.markdown_table(["step", "pixels", "median", "note"],
                                   [["ramp_fit", 1234567, 0.000123, "a | b"],
                                    ["photom", "3 keywords", None, ""]])
    assert table.splitlines() == [
        "| step | pixels | median | note |",
        "|---|---|---|---|",
        "| ramp_fit | 1,234,567 | 1.23e-04 | a \\| b |",
        "| photom | 3 keywords | — |  |",
    ]
    assert measure.format_number(0.699) == "0.699" and measure.format_number(float("nan")) == "—"
    assert measure.format_number(15.41) == "15.4" and measure.format_number(0) == "0"


def test_rule_benchmarks_are_summed_per_step(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for expo, (seconds, rss, cpu) in {"a": (2.0, 512.0, 1.5), "b": (3.0, 1024.0, 2.5)}.items():
        folder = tmp_path / "benchmarks" / "flat_field"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{expo}.tsv").write_text(header + f"{seconds}\t0:00:02\t{rss}\t0\t0\t0\t0\t0\t50\t{cpu}\n")
    once_per_run = header + "1.0\t0:00:01\t256.0\t0\t0\t0\t0\t0\t50\t0.5\n"
    (tmp_path / "benchmarks" / "provenance.tsv").write_text(once_per_run)
    figures = bench.read_rule_benchmarks(tmp_path, ["flat_field", "photom", "provenance"])
    assert figures == {"flat_field": {"wall_s": 5.0, "cpu_s": 4.0, "max_rss_gb": 1.0},
                       "provenance": {"wall_s": 1.0, "cpu_s": 0.5, "max_rss_gb": 0.25}}
    # Job b ran warm: Snakemake measured its client; its worker (the server's log) used 6 CPU s,
    # 2 GB. An earlier run's record of the same job comes first in the log: the last one counts.
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "key.log").write_text("".join(
        json.dumps({"job": "flat_field.py", "log": str(tmp_path / "flat_field" / "b.log"), "exit": 0,
                    "cpu": cpu, "max_rss_kb": rss_kb}) + "\n"
        for cpu, rss_kb in ((9.0, 1), (6.0, 2 * 1024**2))))
    figures = bench.read_rule_benchmarks(tmp_path, ["flat_field"], warm)
    assert figures == {"flat_field": {"wall_s": 5.0, "cpu_s": 10.0, "max_rss_gb": 2.0}}


def test_warm_workers_of_this_run_only(tmp_path):
    """A rerun in the same folder: the servers' log holds the earlier run's exit line too; only
    what this run's servers logged is added (here 2.5 + 4.0 CPU s, a job of 3 GB)."""
    log = tmp_path / "key.log"
    log.write_text('{"job": "a.py", "cpu": 20.0, "max_rss_kb": 8000000}\n'
                   '2026-12-07T20:00:00Z server 1 exits: {"server_cpu": 3.0, "jobs_cpu": 20.0}\n')
    before = measure.warm_log_sizes(tmp_path)
    (tmp_path / "key.lock").write_text("")
    with log.open("a") as stream:
        stream.write('{"job": "b.py", "cpu": 4.0, "max_rss_kb": 3145728}\n'
                     '2026-12-07T20:10:00Z server 2 exits: {"server_cpu": 2.5, "jobs_cpu": 4.0}\n')
    measured = {"user_s": 10.0, "system_s": 1.0, "max_rss_kb": 1000}
    figures = measure.add_warm_workers(measured, tmp_path, before)
    assert figures == {"user_s": 16.5, "system_s": 1.0, "max_rss_kb": 3145728}
    assert not (tmp_path / "key.lock").exists()  # the servers are told to stop


def test_exposure_table_ratios():
    ours = {"ramp_fit": {"wall_s": 8.0, "cpu_s": 7.0, "max_rss_gb": 1.5}}
    table = bench.exposure_table(ours, {"ramp_fit": 16.0}, {"wall_s": 40.0, "cpu_s": 30.0, "max_rss_gb": 1.5},
                                 {"romancal (ols_cas22)": {"wall_s": 50.0, "cpu_s": 45.0, "max_rss_gb": 4.0}})
    lines = table.splitlines()
    assert "| ramp_fit | 8.0 | 7.0 | 1.50 | 16.0 | 0.50× |" in lines
    assert "| dq_init | — | — | — | — | — |" in lines
    assert lines[-1] == ("| **total** vs romancal (ols_cas22) | 40.0 | 30.0 | 1.50 "
                         "| 50.0 (CPU 45.0, 4.00 GB) | 0.80× (CPU 0.67×, memory 0.38×) |")


def test_exposure_table_of_the_presets_jobs():
    """The preset's table lists its own steps (dark_decay, wfi18_transient, source_catalog), not the
    documented chain's jump."""
    ours = {"dark_decay": {"wall_s": 3.0, "cpu_s": 2.0, "max_rss_gb": 1.0}}
    total = {"wall_s": 40.0, "cpu_s": 30.0, "max_rss_gb": 1.5}
    table = bench.exposure_table(ours, {"dark_decay": 12.0}, total,
                                 {"romancal": {"wall_s": 100.0, "cpu_s": 90.0, "max_rss_gb": 4.0}},
                                 steps=bench.PRESET_JOBS)
    lines = table.splitlines()
    assert "| dark_decay | 3.0 | 2.0 | 1.00 | 12.0 | 0.25× |" in lines
    assert "| wfi18_transient | — | — | — | — | — |" in lines
    assert "| source_catalog | — | — | — | — | — |" in lines
    assert not any(line.startswith("| jump |") for line in lines)


PEER_LOG = """\
2026-12-07 15:16:48,133 - stpipe.step - INFO - ExposurePipeline instance created.
2026-12-07 15:16:48,400 - stpipe.step - INFO - Step ExposurePipeline running with args ('u.asdf',).
2026-12-07 15:16:49,000 - stpipe.step - INFO - Step dq_init running with args (<RampModel>,)
2026-12-07 15:16:51,000 - stpipe.step - INFO - Step dq_init done
2026-12-07 15:16:51,250 - stpipe.step - INFO - Step refpix running with args (<RampModel>,).
2026-12-07 15:16:51,250 - stpipe.step - INFO - Step skipped.
2026-12-07 15:16:51,500 - stpipe.step - INFO - Step rampfit running with args (<RampModel>,).
2026-12-07 15:16:51,600 - romancal.ramp_fitting.ramp_fit_step - INFO - Number of resultants: 6
2026-12-07 15:16:55,500 - stpipe.step - INFO - Step rampfit done
2026-12-07 15:16:57,000 - stpipe.step - INFO - Saved model in out_cal.asdf
2026-12-07 15:16:57,500 - stpipe.step - INFO - Step ExposurePipeline done
"""


def test_peer_log_split_adds_up_to_the_wall():
    from datetime import datetime

    launched = datetime(2026, 12, 7, 15, 16, 46, 400000).timestamp()
    split = bench.peer_log_split(PEER_LOG, launched, wall=12.0)
    expected = {"start + imports": 2.0, "read": 0.6, "dq_init": 2.0, "ramp_fit": 4.0,
                # dq_init done -> refpix (skipped) -> rampfit running: 0.5 s of stpipe's own
                "between steps": 0.5, "write": 2.0, "exit": 0.9}
    assert split == pytest.approx(expected)
    assert sum(split.values()) == pytest.approx(12.0)


def test_job_split_from_logs_and_benchmarks(tmp_path):
    from romanpipe.timing import TAG

    (tmp_path / "flat_field").mkdir()
    record = {"step": "flat_field",
              "wall": {"start": 1.0, "read": 0.5, "step": 2.0, "provenance": 0.1, "write": 0.4, "total": 4.1},
              "cpu": {"start": 0.8, "read": 0.4, "step": 1.9, "provenance": 0.1, "write": 0.3, "total": 3.6}}
    log_text = f"x INFO wrote out\nx INFO {TAG} {json.dumps(record)}\n"
    (tmp_path / "flat_field" / "expo.log").write_text(log_text)
    timings = bench.read_job_timings(tmp_path, bench.TIMED_JOBS)
    assert timings["flat_field"]["wall"] == record["wall"]
    jobs = {"flat_field": {"wall_s": 4.5}, "provenance": {"wall_s": 2.0, "cpu_s": 1.5}}
    rows = bench.split_rows(jobs, timings, total_wall=10.0)
    assert rows[0] == ["flat_field", "4.5", "1.00", "0.50", "2.00", "0.10", "0.40", "0.40", "3.6"]
    assert rows[1] == ["provenance", "2.0", "", "", "", "", "", "", "1.5"]
    assert rows[-1][:2] == ["outside the jobs (Snakemake, the pool)", "3.5"]


@pytest.mark.peer
def test_peer_overrides_name_our_references(tmp_path):
    """romancal's steps get our pool's reference files, an identity INVERSELINEARITY and a trimmed FLAT."""
    pytest.importorskip("romancal")
    import peer
    import roman_datamodels.datamodels as rdm

    linearity = rdm.LinearityRefModel.create_fake_data(shape=(3, 16, 16))
    linearity.to_asdf(tmp_path / "lin.asdf")
    flat = rdm.FlatRefModel.create_fake_data(shape=(16, 16))
    flat.data = np.arange(256, dtype=np.float32).reshape(16, 16)
    flat.to_asdf(tmp_path / "flat.asdf")
    row = {f"ref_{reftype}": f"/refs/{reftype}.asdf" for reftype in
           ("mask", "saturation", "refpix", "gain", "readnoise", "dark", "distortion", "photom")}
    row.update(ref_linearity=str(tmp_path / "lin.asdf"), ref_flat=str(tmp_path / "flat.asdf"))
    steps = peer.exposure_pipeline_steps(row, tmp_path / "work", (16, 16), "ols_cas22")
    assert steps["rampfit"] == {"override_gain": "/refs/gain.asdf",
                                "override_readnoise": "/refs/readnoise.asdf", "algorithm": "ols_cas22"}
    assert steps["refpix"] == {"skip": True}  # romancal's refpix needs the full 4096-column readout
    assert steps["dark_decay"] == steps["source_catalog"] == steps["tweakreg"] == {"skip": True}
    # Against a local catalog: the catalog fits PSFs with a Gaussian ePSF and APCORR, tweakreg uses the file.
    row["optical_element"] = "F158"
    steps = peer.exposure_pipeline_steps(row, tmp_path / "work", (16, 16), "ols_cas22",
                                         abs_refcat=tmp_path / "gaia.ecsv")
    assert steps["tweakreg"] == {"abs_refcat": str(tmp_path / "gaia.ecsv")}
    with rdm.open(steps["source_catalog"]["override_epsf"]) as epsf:
        assert epsf.psf.shape[:3] == (1, 3, 9)
        np.testing.assert_allclose(epsf.psf.sum(axis=(-2, -1)), epsf.meta.oversample**2, rtol=1e-5)
    with rdm.open(steps["source_catalog"]["override_apcorr"]) as apcorr:
        row = apcorr.data["F158"]
        np.testing.assert_allclose(row["ap_corrections"] * row["ee_fractions"], 1)
    with rdm.open(steps["linearity"]["override_inverselinearity"]) as inverse:
        assert np.all(inverse.coeffs[1] == 1) and not np.any(inverse.coeffs[[0, 2]])
    with rdm.open(steps["flatfield"]["override_flat"]) as trimmed:
        np.testing.assert_array_equal(trimmed.data, flat.data[4:-4, 4:-4])


@pytest.mark.peer
def test_romancal_default_steps_use_the_preset_runs_references(tmp_path):
    """romancal at its defaults gets the preset run's INVERSELINEARITY, INTEGRALNONLINEARITY and
    DARKDECAYSIGNAL; its dark_decay is skipped below the full readout, where it cannot run."""
    pytest.importorskip("romancal")
    import peer
    import roman_datamodels.datamodels as rdm

    rdm.LinearityRefModel.create_fake_data(shape=(3, 16, 16)).to_asdf(tmp_path / "lin.asdf")
    rdm.FlatRefModel.create_fake_data(shape=(4096, 4096)).to_asdf(tmp_path / "flat.asdf")
    row = {f"ref_{reftype}": f"/refs/{reftype}.asdf" for reftype in
           ("mask", "saturation", "refpix", "gain", "readnoise", "dark", "distortion", "photom",
            "inverselinearity", "integralnonlinearity", "darkdecaysignal")}
    row.update(ref_linearity=str(tmp_path / "lin.asdf"), ref_flat=str(tmp_path / "flat.asdf"))
    small = peer.romancal_default_steps(row, tmp_path / "work", (16, 16))
    assert small["rampfit"]["algorithm"] == "likely"
    assert small["linearity"] == {"override_linearity": str(tmp_path / "lin.asdf"),
                                  "override_inverselinearity": "/refs/inverselinearity.asdf",
                                  "override_integralnonlinearity": "/refs/integralnonlinearity.asdf"}
    assert small["dark_decay"] == small["refpix"] == {"skip": True}
    full = peer.romancal_default_steps(row, tmp_path / "work", (4096, 4096))
    assert full["dark_decay"] == {"override_darkdecaysignal": "/refs/darkdecaysignal.asdf"}
    assert full["refpix"] == {"override_refpix": "/refs/refpix.asdf"}
    assert "wfi18_transient" not in full  # romancal's own default: it acts on WFI18 only


def test_jump_agreement_compares_only_the_jump_flag():
    from romanpipe import dqflags

    import parity

    jump, saturated = int(dqflags.pixel["JUMP_DET"]), int(dqflags.pixel["SATURATED"])
    ours = np.array([0, jump, jump | saturated, saturated, 0])
    theirs = np.array([saturated, jump, 0, saturated | jump, 0])
    assert parity.jump_agreement(ours, theirs) == 3 / 5  # pixels 0, 1 and 4 alike


def test_campaign_throughput_per_hour_and_per_exposure():
    import campaign

    ours = {"wall_s": 600.0, "cpu_s": 1000.0, "max_rss_gb": 2.0}
    theirs = {"wall_s": 900.0, "cpu_s": 1600.0, "max_rss_gb": 4.0}
    lines = campaign.throughput_table(ours, theirs, exposures=4).splitlines()
    # 4 exposures in 600 s: 24 an hour, 250 CPU s each; in 900 s: 16 an hour, 400 CPU s each.
    assert lines[2] == "| ours (Snakemake) | 600.0 | 24 | 250.0 | 2.00 |"
    assert lines[3].endswith("| 900.0 | 16 | 400.0 | 4.00 |")
    assert lines[4] == "| ours/romancal | 0.67× | 1.50× | 0.62× | 0.50× |"


def test_pool_row_paths_are_made_absolute_from_the_run_folder(tmp_path):
    """Our pool writes file paths relative to the run's folder; the peer harness runs elsewhere."""
    import peer

    pool = tmp_path / "run" / "results" / "pool.csv"
    pool.parent.mkdir(parents=True)
    pool.write_text("exposure,path,ref_gain,ref_dark,optical_element\n"
                    "a,uncal/a_uncal.asdf,crds_cache/gain.asdf,/elsewhere/dark.asdf,F158\n"
                    "b,uncal/b_uncal.asdf,,,F062\n")
    first = peer.read_pool_row(pool)
    assert first["path"] == str(tmp_path / "run" / "uncal" / "a_uncal.asdf")
    assert first["ref_gain"] == str(tmp_path / "run" / "crds_cache" / "gain.asdf")
    assert first["ref_dark"] == "/elsewhere/dark.asdf" and first["optical_element"] == "F158"
    second = peer.read_pool_row(pool, Path("b_uncal.asdf"))
    assert second["exposure"] == "b" and second["ref_gain"] == ""


# ---------------------------------------------------------------- fidelity figures (issue 21)

def test_detection_quality_counts_real_detections_and_bright_stars_found():
    """Five stars; detections: three within 0.1" of a star, two far from every star. The
    counted stars are 0, 1, 3; 0 and 1 are found, 3 is not."""
    arcsec = 1 / 3600
    truth = fidelity.Truth(np.array([10.0, 10.0 + 5 * arcsec, 10.0, 10.0 + 10 * arcsec, 10.0]),
                           np.array([20.0, 20.0, 20.0 + 5 * arcsec, 20.0 + 10 * arcsec, 20.0 + 20 * arcsec]))
    detected_ra = np.array([10.0, 10.0 + 5.1 * arcsec, 10.0, 10.0 + 30 * arcsec, 10.0 - 30 * arcsec])
    detected_dec = np.array([20.0 + 0.1 * arcsec, 20.0, 20.0 + 5.05 * arcsec, 20.0, 20.0])
    counted = np.array([True, True, False, True, False])
    quality = fidelity.detection_quality(detected_ra, detected_dec, truth, counted)
    assert quality == {"detections": 5, "purity": 3 / 5, "bright_stars": 3, "completeness": 2 / 3}


def test_a_detected_star_that_completeness_does_not_count_is_still_real():
    """A star in the image's outer pixels is left out of completeness but its detection is a
    star: at 256 px, three of the 37 detections were such stars, and were counted false."""
    arcsec = 1 / 3600
    truth = fidelity.Truth(np.array([10.0, 10.0 + 5 * arcsec]), np.array([20.0, 20.0]))
    quality = fidelity.detection_quality(np.array([10.0, 10.0 + 5 * arcsec]), np.array([20.0, 20.0]), truth,
                                         np.array([True, False]))
    assert quality["purity"] == 1.0 and quality["completeness"] == 1.0 and quality["bright_stars"] == 1


def test_counted_stars_are_significant_and_within_peakmax():
    """source_detection's peakmax drops saturated cores on purpose: such stars are not missed."""
    significance = np.array([50.0, 9.0, 400.0, np.nan, 20.0])
    peaks = np.array([30.0, 5.0, 1900.0, 1.0, np.nan])
    np.testing.assert_array_equal(fidelity.counted_stars(significance, peaks, 1000.0),
                                  [True, False, False, False, True])


def test_star_peaks_is_the_brightest_finite_pixel_around_a_position():
    image = np.zeros((8, 8))
    image[3, 4], image[2, 3], image[2, 1], image[6, 6] = 7.0, 9.0, 11.0, np.nan
    peaks = fidelity.star_peaks(image, np.array([3.6, 6.0, 0.2]), np.array([2.8, 6.0, 0.0]))
    np.testing.assert_array_equal(peaks, [9.0, 0.0, 0.0])


def tan_wcs(pixel_arcsec=0.11, centre=32.0):
    """A plain TAN gwcs of ``pixel_arcsec`` pixels whose tangent point is pixel (``centre``, ``centre``)."""
    from astropy import units as u
    from astropy.coordinates import ICRS
    from astropy.modeling.models import Pix2Sky_TAN, RotateNative2Celestial, Scale, Shift
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gwcs_wcs

    scale = pixel_arcsec / 3600
    transform = ((Shift(-centre) & Shift(-centre)) | (Scale(-scale) & Scale(scale)) | Pix2Sky_TAN()
                 | RotateNative2Celestial(10.0, 20.0, 180.0))
    return gwcs_wcs.WCS([(cf.Frame2D(name="detector", unit=(u.pix, u.pix)), transform),
                         (cf.CelestialFrame(reference_frame=ICRS(), name="world"), None)])


def gaussian_stars(positions, totals, sky=2.0, sigma=1.0, size=64):
    """A size x size image of Gaussian stars (``sigma`` pixels) of the given totals on a flat sky."""
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.full((size, size), sky)
    for (x, y), total in zip(positions, totals, strict=True):
        image += total * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return image


def test_star_fluxes_and_mosaic_ratio_on_a_known_image():
    """Two Gaussian stars of 100 and 300 on a sky of 2 (1 px per unit of a plain TAN WCS):
    sky-subtracted aperture sums within 1 %; an image twice as bright is a ratio of 2."""
    wcs = tan_wcs()
    positions = [(20.3, 22.6), (44.8, 40.1)]
    ra, dec = wcs(np.array([p[0] for p in positions]), np.array([p[1] for p in positions]))
    image = gaussian_stars(positions, (100.0, 300.0))
    truth = fidelity.Truth(np.asarray(ra), np.asarray(dec))
    fluxes = fidelity.star_fluxes(image, wcs, truth)
    np.testing.assert_allclose(fluxes, [100.0, 300.0], rtol=0.01)
    brighter = fidelity.star_fluxes(2 * image, wcs, truth)
    assert fidelity.median_ratio(brighter, fluxes) == (pytest.approx(2.0), 2)


def test_mosaic_ratio_counts_only_the_stars_significant_in_a_single_exposure():
    """Stars of 300, 20 and 300 (the last off the image) on a sky of 2 with an error of 1 per pixel:
    a 3-pixel aperture holds ~28 pixels, so the 20 star is ~3.5 sigma, the 300 ~50 sigma. The
    mosaic doubles the bright star and halves the faint one: the ratio over the significant
    stars is the bright star's alone, 2."""
    from types import SimpleNamespace

    wcs = tan_wcs()
    positions = [(20.3, 22.6), (44.8, 40.1), (80.0, 30.0)]
    ra, dec = wcs(np.array([p[0] for p in positions]), np.array([p[1] for p in positions]))
    truth = fidelity.Truth(np.asarray(ra), np.asarray(dec))
    single = SimpleNamespace(data=gaussian_stars(positions, (300.0, 20.0, 300.0)), err=np.ones((64, 64)),
                             meta=SimpleNamespace(wcs=wcs))
    np.testing.assert_array_equal(fidelity.significant_stars(single, truth), [True, False, False])
    mosaic = SimpleNamespace(data=gaussian_stars(positions, (600.0, 10.0, 600.0)), err=np.ones((64, 64)),
                             meta=SimpleNamespace(wcs=wcs))
    keep = fidelity.significant_stars(single, truth)
    ratio, stars = fidelity.mosaic_over_single(mosaic, [single, single], truth, keep=keep)
    assert stars == 1 and ratio == pytest.approx(2.0, rel=0.01)
    # Without the cut the faint star's 0.5 enters the median.
    assert fidelity.mosaic_over_single(mosaic, [single, single], truth)[0] == pytest.approx(1.25, rel=0.02)


def test_mosaic_ratio_on_a_finer_grid_measures_the_same_angle_on_the_sky():
    """A star of sigma 2 pixels on 0.11" pixels and the same star on a mosaic of 0.055" pixels (a
    sky cell's): the same surface brightness, four times the pixel sum. The mosaic's aperture is
    12 of its pixels, the single exposure's 6: ratio 1 (a 6-pixel aperture on the mosaic would
    measure 0.62 of it)."""
    from types import SimpleNamespace

    single_wcs, mosaic_wcs = tan_wcs(), tan_wcs(0.055, 64.0)
    ra, dec = single_wcs(np.array([31.3]), np.array([33.6]))
    truth = fidelity.Truth(np.asarray(ra), np.asarray(dec))
    (mosaic_x,), (mosaic_y,) = mosaic_wcs.invert(ra, dec)
    single = SimpleNamespace(data=gaussian_stars([(31.3, 33.6)], [500.0], sigma=2.0), err=np.ones((64, 64)),
                             meta=SimpleNamespace(wcs=single_wcs))
    mosaic = SimpleNamespace(data=gaussian_stars([(mosaic_x, mosaic_y)], [2000.0], sigma=4.0, size=128),
                             meta=SimpleNamespace(wcs=mosaic_wcs))
    ratio, stars = fidelity.mosaic_over_single(mosaic, [single], truth)
    assert stars == 1 and ratio == pytest.approx(1.0, abs=0.01)


def test_romanisim_dither_moves_the_pointing_by_its_offset_on_the_sky():
    """The second exposure's pointing: the offset's length on the sky, east and north of the first."""
    import parity
    from astropy.coordinates import SkyCoord

    east, north = parity.ROMANISIM_DITHERS_ARCSEC[1]
    start = SkyCoord(*parity.ROMANISIM_POINTING_DEG, unit="deg")
    moved = SkyCoord(*parity.dithered_pointing((east, north)), unit="deg")
    assert start.separation(moved).arcsec == pytest.approx(np.hypot(east, north), rel=1e-6)
    assert moved.ra.deg > start.ra.deg and moved.dec.deg > start.dec.deg
    assert parity.dithered_pointing((0.0, 0.0)) == pytest.approx(parity.ROMANISIM_POINTING_DEG)


def test_catalog_bench_input_holds_its_stars_and_the_pools_references(tmp_path):
    """The source catalog bench's _cal: the simulator's stars (their flux in DN/s over the sky),
    its WCS and photometry, and the EPSF and APCORR the pool would select for it."""
    import catalog_speed
    import roman_datamodels as rdm

    from wfisim.detector import build_detector

    paths = catalog_speed.make_input(tmp_path, 72, stars=4, seed=3)
    gain = build_detector("WFI01", (64, 64), 3).nominal_gain
    rng = np.random.default_rng(3)  # the stars make_input draws first
    rng.uniform(size=8)
    flux = np.exp(rng.uniform(*np.log(catalog_speed.STAR_FLUX_E_PER_S), 4))
    with rdm.open(paths["cal"]) as image:
        assert image.data.shape == (64, 64)
        total = float(np.sum(image.data)) - catalog_speed.SKY_E_PER_S / gain * 64**2
        noise = np.sqrt(np.sum(np.asarray(image.err, dtype=np.float64) ** 2))
        # most of each star's stamp lies on the 64^2 image: between 60 % and all of the flux
        assert 0.6 * flux.sum() / gain - 5 * noise < total < flux.sum() / gain + 5 * noise
        ra, dec = image.meta.wcs(32.0, 32.0)
        assert abs(dec - 66.0) < 0.3 and image.meta.photometry.conversion_megajanskys > 0
    with rdm.open(paths["apcorr"]) as apcorr, rdm.open(paths["epsf"]) as epsf:
        assert list(apcorr.data) == ["F158"] and epsf.meta.instrument.optical_element == "F158"
    assert catalog_speed.make_input(tmp_path, 72, stars=4, seed=3) == paths  # made once


def test_parity_campaign_draws_its_stars_with_the_psf_fit_psf_fits():
    """fit_psf fits galsim's Roman PSF; on the Gaussian stars the parity campaign drew, it moved
    bright stars by up to 0.3 pixel and tweakreg ended 8.9 mas off (0.5 mas on Roman-PSF stars)."""
    import parity

    from wfisim.campaign import CampaignConfig

    config = CampaignConfig.from_mapping(measure.campaign_config(256, "IMG_UNEVEN_6", parity.CAMPAIGN_PSF))
    assert config.psf == "roman" and config.size == 256 and config.exposures_per_filter == 4


@pytest.mark.parametrize(("flags", "expected"), [
    ([], ["exposure", "preset", "likely", "mosaic", "catalog"]),
    (["--skip-documented", "--skip-mosaic", "--skip-catalog"], ["preset", "likely"]),
    (["--skip-documented", "--skip-likely", "--skip-mosaic", "--skip-catalog"], ["preset"]),
])
def test_bench_levels_left_out_by_their_flags(tmp_path, monkeypatch, flags, expected):
    """--skip-documented leaves out the documented chain's exposure level and keeps the preset's,
    so romancal 1.1's chain can be measured alone at full size."""
    ran = []

    def level(name, result):
        def run(*args):
            ran.append(name)
            return result
        return run

    monkeypatch.setattr(bench, "exposure_level", level("exposure", ("", {})))
    monkeypatch.setattr(bench, "preset_level", level("preset", ""))
    monkeypatch.setattr(bench, "likely_fit_level", level("likely", ""))
    monkeypatch.setattr(bench, "mosaic_level", level("mosaic", ""))
    monkeypatch.setattr(bench.catalog_speed, "catalog_table", level("catalog", ""))
    assert bench.main(["--size", "64", "--ma-table", "IMG_UNEVEN_6", "--out", str(tmp_path), *flags]) == 0
    assert ran == expected
    assert (tmp_path / "bench_64.md").exists()


@pytest.mark.peer
def test_romanisim_draws_its_stars_where_our_assign_wcs_reads_them():
    """romanisim (no CRDS) through parity's bridge draws a few stars around the dithered pointing
    (level 0: the electron image alone, no ramp; romanisim draws full detectors only). The pixels
    it drew them at (its ``simcatobj``), read through the WCS our assign_wcs builds from the
    ``meta.wcsinfo`` romanisim wrote and WFI01's DISTORTION reference, land on the stars to within
    1 mas (measured: 0.01-0.06 mas; float32 pixels and the SIAF's inverse polynomial). Without the
    distortion romanisim draws through galsim.roman's WCS and leaves wcsinfo at the boresight:
    assign_wcs then reads the stars 0.5 degrees away."""
    pytest.importorskip("romanisim")
    import galsim
    import parity
    from astropy.coordinates import SkyCoord
    from romanisim import catalog

    from assign_wcs import build_wcs
    from wfisim.pointing import distortion_model

    ra, dec = parity.dithered_pointing(parity.ROMANISIM_DITHERS_ARCSEC[1])
    stars = catalog.make_stars(galsim.CelestialCoord(ra * galsim.degrees, dec * galsim.degrees), n=5,
                               radius=0.04, index=3, faintmag=18, truncation_radius=None, bandpasses=["F158"],
                               rng=galsim.UniformDeviate(3))
    electrons, extras = parity.romanisim_simulate(parity.romanisim_metadata("IMG_UNEVEN_6", 2), stars,
                                                  galsim.UniformDeviate(4), level=0)
    drawn = extras["simcatobj"]
    assert len(drawn) == 5 and np.all((drawn["x"] > 0) & (drawn["x"] < 4087))
    assert np.all((drawn["y"] > 0) & (drawn["y"] < 4087))
    wcsinfo = electrons["meta"]["wcsinfo"]
    assert wcsinfo["aperture_name"] == "WFI01_FULL"
    wcs = build_wcs(distortion_model("WFI01", (4096, 4096)), wcsinfo, electrons["data"].shape)
    read_ra, read_dec = wcs(drawn["x"].astype(float), drawn["y"].astype(float))
    truth = SkyCoord(stars["ra"], stars["dec"], unit="deg")
    assert SkyCoord(read_ra, read_dec, unit="deg").separation(truth).to_value("mas").max() < 1.0


def test_romanisim_level1_is_labelled_with_the_observation_its_name_says():
    """romanisim's Level 1 file (a small one here) gets program 1 and the other identifiers of
    its name: given none, romanisim writes program -999999, which the association step refuses."""
    from romanpipe.naming import parse_exposure_name

    import parity
    from roman_datamodels import datamodels

    for exposure in (1, 2):
        level1 = datamodels.ScienceRawModel.create_fake_data(shape=(2, 8, 8))
        level1.meta.observation.program = -999999
        parity.label_romanisim_level1(level1, exposure)
        fields = parse_exposure_name(level1.meta.filename)
        assert level1.meta.filename == parity.romanisim_uncal_name(exposure)
        assert fields["detector"] == "WFI01" and int(fields["exposure"]) == exposure
        assert level1.meta.observation.program == 1 and level1.meta.observation.exposure == exposure
        for key in ("program", "execution_plan", "pass", "segment", "observation", "visit", "exposure"):
            assert int(fields[key]) == level1.meta.observation[key]
