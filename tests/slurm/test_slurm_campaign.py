"""The demo-style campaign through a real SLURM cluster (profiles/slurm).

One simulated campaign, run twice from identical copies: with the local profile and through
`snakemake --profile profiles/slurm`. The products must be the same, every job must have
been a real SLURM job, and a job cancelled with `scancel` mid-run must be retried
(restart-times) to a correct product and a successful run. A second campaign, to the mosaics,
holds an exposure that fails after the pool (the torture test's flooded one): the good
exposures must still reach _cal and their mosaic (the workflow's second pass, again through
SLURM), the failed one must be in the failure ledger and the report's quarantine table, and
the run must exit non-zero.

Run by `make test-slurm`, which starts a one-node cluster on this machine first
(.ci/slurm_cluster.sh); not collected by `make test`. Skipped, with the reason, when that
script could not set up a cluster (not root, Debian's packages unreachable).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from romanpipe.naming import split_suffix

import pandas as pd
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

from comparison import fresh_copy, model_differences, product_differences
from test_campaign_torture import CAMPAIGN, FLOODED_REASON, GOOD, add_flooded_exposure
from wfisim.campaign import CampaignConfig, simulate_campaign

ROOT = Path(__file__).resolve().parents[2]
# where .ci/slurm_cluster.sh keeps its pid files and, when it could not set up a cluster, why
STATE = Path(os.environ.get("WFI_SLURM_STATE", Path(tempfile.gettempdir()) / f"wfi-slurm-ci-{os.getuid()}"))
# Seconds for one workflow run, a guard against a hung run: the whole module takes ~8 minutes
# on an idle machine, and a run took over 600 s with the machine loaded ~7x.
RUN_TIMEOUT = 1200
# A run with a failing exposure: its group jobs, then the second pass makes the mosaic, a job
# per step.
FAILING_RUN_TIMEOUT = 1500

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

# "Job 7 has been submitted with SLURM jobid 3 (log: .../slurm_logs/rule_pool/3.log)."; a group
# job (profiles/slurm groups each exposure's steps) is named by a uuid and logs under group_<name>/.
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# The profile's group of one exposure's steps: SLURM comments and log folders start with it.
EXPOSURE_GROUP = "exposure_"

def clean_env() -> dict[str, str]:
    """The caller's environment less CRDS_* (the workflow sets its own) and SLURM_* (not a job)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CRDS_", "SLURM_"))}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(workdir / "workflow.yaml"), *args]


def squeue(*args: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "--noheader", *args], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def jobs_in(workdir: Path, states: str = "all") -> list[dict[str, str]]:
    """SLURM jobs submitted from ``workdir``: id, state, comment (rule_<rule>_wildcards_...), name."""
    rows = squeue(f"--states={states}", "--format=%i|%T|%k|%j|%Z")
    return [dict(id=r[0], state=r[1], comment=r[2], name=r[3]) for r in rows
            if len(r) == 5 and Path(r[4]) == workdir]


def cancel_jobs_in(workdir: Path) -> None:
    """Cleanup after a failed or timed-out run: no job of ours may outlive the test."""
    ids = [job["id"] for job in jobs_in(workdir, "PENDING,RUNNING")]
    if ids:
        subprocess.run(["scancel", *ids], check=False, timeout=30)


def run_slurm(workdir: Path, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    command = snakemake_command(workdir, "--profile", str(ROOT / "profiles" / "slurm"), *args)
    try:
        return subprocess.run(command, capture_output=True, text=True, env=clean_env(),
                              timeout=timeout)
    finally:
        cancel_jobs_in(workdir)


def submissions(log: str) -> list[tuple[str, str, Path]]:
    """(snakemake job id, SLURM job id, SLURM log file) of every submission in a run's log."""
    return [(job, slurm_id, Path(path)) for job, slurm_id, path in SUBMITTED.findall(log)]


def steps_run_for(run: Path) -> dict[str, set[str]]:
    """Exposure -> the rules of its group job: the steps in its _cal's provenance, cal, its
    quicklook, and source_catalog where the run made the exposure's catalog."""
    steps = {}
    for cal in (run / "results" / "exposures").glob("*_cal.asdf"):
        expo = split_suffix(cal)[0]
        catalog = {"source_catalog"} if cal.with_name(f"{expo}_cat.parquet").exists() else set()
        with rdm.open(cal) as model:
            steps[expo] = set(model.meta.provenance.keys()) | {"cal", "quicklook_cal"} | catalog
    return steps


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster():
    """A SLURM node that takes jobs (on this machine: idle), or a skip saying why there is none."""
    marker = STATE / "unavailable"
    if marker.exists():
        pytest.skip(f"no SLURM cluster on this machine: {marker.read_text().strip()}")
    if not shutil.which("sbatch"):
        pytest.skip("SLURM is not installed: run `make test-slurm` (it runs .ci/slurm_cluster.sh start)")
    result = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N|%T"],
                            capture_output=True, text=True, timeout=30)
    states = [line.split("|")[1] for line in result.stdout.split()]
    usable = {"idle", "mixed", "allocated", "completing"}
    assert result.returncode == 0 and usable & set(states), (
        f"SLURM is installed but no node takes jobs ({result.stdout or result.stderr!r}): "
        "start the cluster with .ci/slurm_cluster.sh start"
    )


@pytest.fixture(scope="module")
def campaign(slurm_cluster, tmp_path_factory):
    """The simulated inputs (uncal, references, CRDS cache): copied, never run in."""
    out = tmp_path_factory.mktemp("inputs")
    config = CampaignConfig.from_mapping({
        "detectors": ["WFI01", "WFI02"], "filters": ["F158", "F087"], "exposures_per_filter": 1,
        "size": 48, "stars": 6, "saturating_stars": 2, "seed": 7,
    })
    simulate_campaign(config, out)
    # Level 2 (_cal) through every exposure-level rule; the mosaics add no new kind of job
    # for the scheduler, and each job costs ~16 s of SLURM overhead here (make bench-slurm).
    with open(out / "workflow.yaml", "a") as stream:
        stream.write("target: cal\n")
    return out


@pytest.fixture(scope="module")
def local_run(campaign, tmp_path_factory):
    workdir = fresh_copy(campaign, tmp_path_factory, "local")
    result = subprocess.run(
        snakemake_command(workdir, "--profile", str(ROOT / "profiles" / "local")),
        capture_output=True, text=True, env=clean_env(), timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def slurm_run(campaign, tmp_path_factory):
    workdir = fresh_copy(campaign, tmp_path_factory, "slurm")
    result = run_slurm(workdir)
    assert result.returncode == 0, result.stderr[-5000:]
    # SLURM's view of the jobs, taken at once: slurmctld forgets finished jobs after MinJobAge
    return workdir, result.stdout + result.stderr, {job["id"]: job for job in jobs_in(workdir)}


@pytest.fixture(scope="module")
def failing_run(slurm_cluster, tmp_path_factory):
    """Two good exposures of one association and a flooded one that fails in source_detection,
    to the mosaics through SLURM: (work directory, the failing exposure, the run's result)."""
    workdir = tmp_path_factory.mktemp("failing").resolve() / "campaign"
    simulate_campaign(CampaignConfig.from_mapping(CAMPAIGN), workdir)
    failing = add_flooded_exposure(workdir)
    # A failure in the data fails again on every retry: no retries here (the cancelled-job test
    # checks them), so that the run's time goes to the second pass.
    return workdir, failing, run_slurm(workdir, "--restart-times", "0", timeout=FAILING_RUN_TIMEOUT)


# --- tests -----------------------------------------------------------------------------------


def test_slurm_products_equal_the_local_ones(local_run, slurm_run):
    workdir, _, _ = slurm_run
    exposures = workdir / "results" / "exposures"
    assert len(list(exposures.glob("*_cal.asdf"))) == 4
    # the 3-D ramps between steps were temporary (the default), on SLURM as locally
    assert not list(exposures.glob("*_saturation.asdf"))
    assert product_differences(local_run, workdir) == []


def test_the_comparison_sees_a_one_bit_change(local_run, tmp_path):
    """The comparison above must not pass by comparing nothing."""
    product = sorted((local_run / "results" / "exposures").glob("*_rampfit.asdf"))[0]
    changed = tmp_path / "run" / "results" / "exposures" / product.name
    changed.parent.mkdir(parents=True)
    with rdm.open(product) as model:
        model.dq[10, 10] ^= 1
        model.save(changed)  # with a new file_date: volatile, not a difference
    differing = {problem.split(": ")[1] for problem in model_differences(product, changed)}
    # (the provenance's reference paths differ too: the copy is not in a run folder of its own)
    assert {key for key in differing if ".parameters.override_" not in key} == {"roman.dq"}


def test_every_job_was_a_real_slurm_job(local_run, slurm_run):
    workdir, log, in_slurm = slurm_run
    submitted = submissions(log)
    logs = workdir / ".snakemake" / "slurm_logs"
    # the pool checkpoint, then one group job per exposure running all its steps (target _cal)
    steps = steps_run_for(local_run)
    folders = [path.relative_to(logs).parts[0] for _, _, path in submitted]
    assert folders.count("rule_pool") == 1 and len(folders) == 1 + len(steps)
    assert all(folder.startswith(f"group_{EXPOSURE_GROUP}") for folder in folders if folder != "rule_pool")
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    made_by_group = set()
    for _, slurm_id, slurm_log in submitted:
        # slurmctld knows the job (MinJobAge keeps it listed), under this run's name ...
        assert in_slurm[slurm_id]["state"] == "COMPLETED"
        assert in_slurm[slurm_id]["name"] == run_id
        # ... and the job's own log shows Snakemake running the rules inside it
        assert slurm_log.name == f"{slurm_id}.log"
        text = slurm_log.read_text()
        rules = set(re.findall(r"^local(?:rule|checkpoint) (\w+):$", text, re.MULTILINE))
        if rules == {"pool"}:
            assert "1 of 1 steps (100%) done" in text
            continue
        (expo,) = set(re.findall(r"wildcards: expo=(\S+)", text))
        assert rules == steps[expo], expo
        assert f"{len(rules)} of {len(rules)} steps (100%) done" in text
        made_by_group.add(expo)
    assert made_by_group == set(steps)
    assert len(in_slurm) == len(submitted)


def test_a_cancelled_job_is_retried_to_completion(campaign, local_run, tmp_path_factory):
    """scancel an exposure's running group job: restart-times resubmits it, the run succeeds."""
    workdir = fresh_copy(campaign, tmp_path_factory, "cancel")
    # One exposure's count-rate image (the pool, then its ramp steps in one group job) keeps
    # this run short.
    expo = sorted((workdir / "uncal").glob("*_uncal.asdf"))[0].name.removesuffix("_uncal.asdf")
    command = snakemake_command(workdir, "--profile", str(ROOT / "profiles" / "slurm"),
                                f"results/exposures/{expo}_rampfit.asdf")
    log_path = workdir.parent / "snakemake.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=clean_env())
        try:
            cancelled = None
            deadline = time.monotonic() + RUN_TIMEOUT
            while cancelled is None and process.poll() is None and time.monotonic() < deadline:
                running = [job for job in jobs_in(workdir, "RUNNING")
                           if job["comment"].startswith(f"rule_{EXPOSURE_GROUP}")]
                if running:
                    time.sleep(2)  # well inside the job: its Snakemake has started, no product yet
                    cancelled = running[0]
                    subprocess.run(["scancel", cancelled["id"]], check=True, timeout=30)
                else:
                    time.sleep(0.2)
            assert cancelled is not None, "no group job of an exposure was seen running"
            returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            cancel_jobs_in(workdir)
    log = log_path.read_text()
    assert returncode == 0, log[-5000:]

    jobs = jobs_in(workdir)
    states = {job["id"]: job["state"] for job in jobs}
    assert states[cancelled["id"]] == "CANCELLED"
    # The cancelled group was submitted again (same Snakemake job, a new SLURM job) and that
    # one completed; nothing else failed.
    by_slurm_id = {slurm_id: job for job, slurm_id, _ in submissions(log)}
    retries = [other for other, job in by_slurm_id.items()
               if job == by_slurm_id[cancelled["id"]] and other != cancelled["id"]]
    assert len(retries) == 1, log[-5000:]
    assert states[retries[0]] == "COMPLETED"
    assert sorted(states.values()) == ["CANCELLED"] + ["COMPLETED"] * (len(states) - 1)
    assert sorted(job["comment"] for job in jobs) == sorted(["rule_pool"] + [cancelled["comment"]] * 2)
    # The ramps between the steps were temporary, and the count-rate image is the one the
    # local run made on its way to _cal.
    exposures = workdir / "results" / "exposures"
    assert [p.name for p in exposures.glob("*.asdf")] == [f"{expo}_rampfit.asdf"]
    assert product_differences(local_run, workdir, f"{expo}_rampfit.asdf") == []
    # (the target here is one _rampfit: no provenance or benchmark table is made)
    assert product_differences(local_run, workdir, "pool.csv") == []
    assert product_differences(local_run, workdir, "quarantine.csv") == []


def test_an_exposure_failing_on_slurm_costs_only_itself(failing_run):
    workdir, failing, result = failing_run
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-5000:]
    assert "1 exposure(s) failed after the pool and are left out of the campaign" in log, log[-5000:]
    assert "Running again without them" in log
    results = workdir / "results"
    # The good exposures reached _cal, the failing one did not ...
    assert sorted(p.name for p in (results / "exposures").glob("*_cal.asdf")) == \
        [f"{expo}_cal.asdf" for expo in GOOD]
    # ... and their association was built from them alone, and mosaicked by SLURM jobs.
    index = pd.read_csv(results / "associations.csv")
    assert len(index) == 1
    members = json.loads(index.loc[0, "tree"])["products"][0]["members"]
    assert sorted(Path(m["expname"]).name for m in members) == [f"{expo}_cal.asdf" for expo in GOOD]
    mosaic_path = results / "mosaics" / f"{index.loc[0, 'product']}_i2d.asdf"
    assert mosaic_path.is_file(), log[-8000:]
    with rdm.open(mosaic_path) as mosaic:
        assert isinstance(mosaic, datamodels.MosaicModel)
    folders = {path.relative_to(workdir / ".snakemake" / "slurm_logs").parts[0]
               for _, _, path in submissions(log)}
    assert {"rule_flux", "rule_skymatch", "rule_outlier_detection", "rule_resample"} <= folders, folders
    assert f"left out {failing}: it did not reach _cal" in (workdir / "logs" / "associations.log").read_text()
    # The failure is recorded with its step and reason, in the ledger and the report's table.
    ledger = pd.read_csv(results / "failed.csv", dtype=str, keep_default_na=False)
    assert ledger[["exposure", "step"]].values.tolist() == [[failing, "source_detection"]]
    assert ledger.loc[0, "reason"].startswith(FLOODED_REASON)
    report = pd.read_csv(results / "quarantine_report.csv", dtype=str, keep_default_na=False)
    assert report[["exposure", "stage"]].values.tolist() == [[failing, "source_detection"]]
    assert report.loc[0, "reason"].startswith(FLOODED_REASON)
