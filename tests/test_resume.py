"""A run killed mid-way resumes to the same products, and the default temporary ramps.

A tiny campaign (one detector, two exposures, to _cal) is run with the defaults twice:
once straight through, once killed with SIGKILL (Snakemake and every job it started, as a
lost node or an operator's kill -9 would) and then resumed as the README says. The
products must be the same. The straight run also shows what the default temporary ramps
cost: nothing left on disk between the steps, and a changed ramp-step parameter reruns the
ramp chain from dq_init, while a changed image-step parameter reruns only its own chain.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comparison import fresh_copy, product_differences
from test_workflow import planned_jobs, report_jobs
from wfisim.campaign import CampaignConfig, simulate_campaign

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 600

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume")]


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--profile", str(ROOT / "profiles" / "local"), "--directory", str(workdir),
            "--configfile", str(workdir / "workflow.yaml"), *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True,
                          env=clean_env(), timeout=RUN_TIMEOUT)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """The simulated inputs: copied for each run, never run in."""
    out = tmp_path_factory.mktemp("inputs")
    simulate_campaign(CampaignConfig.from_mapping({
        "detectors": ["WFI01"], "filters": ["F158"], "exposures_per_filter": 2,
        "dithers": [[0.0, 0.0], [2.5, 1.5]], "size": 64, "stars": 20, "saturating_stars": 1, "seed": 5,
    }), out)
    with open(out / "workflow.yaml", "a") as stream:
        stream.write("target: cal\n")
    return out


@pytest.fixture(scope="module")
def straight_run(campaign, tmp_path_factory):
    workdir = fresh_copy(campaign, tmp_path_factory, "straight")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def resumed_run(campaign, tmp_path_factory):
    """Killed with SIGKILL while a ramp step runs, unlocked, then rerun with --rerun-incomplete."""
    workdir = fresh_copy(campaign, tmp_path_factory, "killed")
    process = subprocess.Popen(snakemake_command(workdir), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
    deadline = time.monotonic() + RUN_TIMEOUT
    running = workdir / ".snakemake" / "incomplete"
    try:
        # Snakemake marks a job's outputs incomplete while it runs: kill once a ramp step is on.
        while process.poll() is None and time.monotonic() < deadline:
            if any(running.rglob("*")) and any((workdir / "logs").glob("saturation/*.log")):
                break
            time.sleep(0.1)
        assert process.poll() is None, "the run ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert not list((workdir / "results" / "exposures").glob("*_cal.asdf"))
    # The killed run's lock may stay behind ("Directory cannot be locked"): lift it, then the
    # same command (the local profile also sets rerun-incomplete; given as the README says).
    assert snakemake(workdir, "--unlock").returncode == 0
    resumed = snakemake(workdir, "--rerun-incomplete")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return workdir


def test_a_killed_run_resumes_to_the_same_products(straight_run, resumed_run):
    assert len(list((resumed_run / "results" / "exposures").glob("*_cal.asdf"))) == 2
    assert product_differences(straight_run, resumed_run) == []
    # nothing was left behind but the products (atomic writes: no staging files)
    assert not [p for p in (resumed_run / "results").rglob(".*") if p.parent.name != ".cache"
                and ".cache" not in p.parts]


def test_default_ramps_between_steps_are_deleted_and_the_images_kept(straight_run):
    made = sorted(p.name.rsplit("_", 1)[1] for p in (straight_run / "results" / "exposures").glob("*.asdf"))
    assert made == sorted(["rampfit.asdf", "assignwcs.asdf", "flat.asdf", "photom.asdf",
                           "sourcedetection.asdf", "tweakreg.asdf", "cal.asdf", "segm.asdf"] * 2)
    result = snakemake(straight_run, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_changed_image_step_parameter_reruns_its_chain_only(straight_run):
    (straight_run / "flat.yaml").write_text("flat_field:\n  include_var_flat: false\n")
    result = snakemake(straight_run, "-n", "--configfile", str(straight_run / "workflow.yaml"),
                       str(straight_run / "flat.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert planned_jobs(result) == {"flat_field": 2, "photom": 2, "source_detection": 2, "tweakreg": 2,
                                    "source_catalog": 2, "cal": 2, **report_jobs(2, 0), "all": 1}


def test_changed_ramp_step_parameter_reruns_the_ramp_chain_it_deleted(straight_run):
    """The cost of temporary ramps: ramp_fit needs the dark-subtracted ramp, made again from dq_init."""
    (straight_run / "fit.yaml").write_text("ramp_fit:\n  threshold_intercept: 6.0\n")
    result = snakemake(straight_run, "-n", "--configfile", str(straight_run / "workflow.yaml"),
                       str(straight_run / "fit.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    # (refpix is skipped on these small arrays, jump by ramp fitting's own jump detection)
    ramp_chain = {"dq_init": 2, "saturation": 2, "linearity": 2, "dark_current": 2}
    assert planned_jobs(result) == {**ramp_chain, "ramp_fit": 2, "assign_wcs": 2, "flat_field": 2,
                                    "photom": 2, "source_detection": 2, "tweakreg": 2,
                                    "source_catalog": 2, "cal": 2,
                                    **report_jobs(2, 0), "all": 1}
