"""The demo-style campaign through a real SLURM cluster (profiles/slurm).

One simulated campaign, run twice from identical copies: with the local profile and through
`snakemake --profile profiles/slurm`. The products must be the same, every job must have
been a real SLURM job, and a job cancelled with `scancel` mid-run must be retried
(restart-times) to a correct product and a successful run.

Run by `make test-slurm`, which starts a one-node cluster on this machine first
(.ci/slurm_cluster.sh); not collected by `make test`. Skipped, with the reason, when that
script could not set up a cluster (not root, Debian's packages unreachable).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asdf
import gwcs
import numpy as np
import pytest
import roman_datamodels as rdm

from romanpipe.naming import STEP_SUFFIX, split_suffix
from wfisim.campaign import CampaignConfig, simulate_campaign

ROOT = Path(__file__).resolve().parents[2]
# where .ci/slurm_cluster.sh keeps its pid files and, when it could not set up a cluster, why
STATE = Path(os.environ.get("WFI_SLURM_STATE", Path(tempfile.gettempdir()) / f"wfi-slurm-ci-{os.getuid()}"))
RUN_TIMEOUT = 600  # seconds for one workflow run; the whole module takes ~8 minutes

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

# "Job 7 has been submitted with SLURM jobid 3 (log: .../slurm_logs/rule_dq_init/<expo>/3.log)."
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")

# Metadata that legitimately differs between two runs of the same code on the same inputs:
# when the file was written and, in a step's provenance, when, where and how long it ran.
# (Absolute paths contain the run's folder: they are compared with that folder replaced.)
VOLATILE = re.compile(
    r"^roman\.meta\.(file_date"
    r"|provenance\.[^.]+\.(date|start\w*|end\w*|finish\w*|duration\w*|elapsed\w*|wall\w*|cpu\w*"
    r"|host\w*|node\w*|pid|user|slurm\w*))$"
)


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


def run_slurm(workdir: Path) -> subprocess.CompletedProcess:
    command = snakemake_command(workdir, "--profile", str(ROOT / "profiles" / "slurm"))
    try:
        return subprocess.run(command, capture_output=True, text=True, env=clean_env(),
                              timeout=RUN_TIMEOUT)
    finally:
        cancel_jobs_in(workdir)


def submissions(log: str) -> list[tuple[int, str, Path]]:
    """(snakemake job id, SLURM job id, SLURM log file) of every submission in a run's log."""
    return [(int(job), slurm_id, Path(path)) for job, slurm_id, path in SUBMITTED.findall(log)]


# --- comparing two runs' products ------------------------------------------------------


def normalized(value, workdir: Path):
    return value.replace(str(workdir), "<WORKDIR>") if isinstance(value, str) else value


def model_differences(path_a: Path, path_b: Path) -> list[str]:
    """Every difference between two products, but the volatile fields: arrays bit for bit."""
    problems = []
    with rdm.open(path_a) as model_a, rdm.open(path_b) as model_b:
        flat_a, flat_b = model_a.to_flat_dict(), model_b.to_flat_dict()
        problems += flat_differences(flat_a, flat_b, path_a, path_b)
    # The ASDF history lists the extensions used, in no fixed order: compare them as sets.
    with asdf.open(path_a) as file_a, asdf.open(path_b) as file_b:
        used_a = sorted(str(e.get("extension_uri")) for e in file_a["history"].get("extensions", []))
        used_b = sorted(str(e.get("extension_uri")) for e in file_b["history"].get("extensions", []))
    if used_a != used_b:
        problems.append(f"{path_a.name}: ASDF extensions differ: {used_a} != {used_b}")
    return problems


def flat_differences(flat_a: dict, flat_b: dict, path_a: Path, path_b: Path) -> list[str]:
    problems = []
    keys_a = {k for k in flat_a if not VOLATILE.match(k)}
    keys_b = {k for k in flat_b if not VOLATILE.match(k)}
    if keys_a != keys_b:
        problems.append(f"{path_a.name}: keys only on one side: {sorted(keys_a ^ keys_b)}")
    root_a, root_b = path_a.parents[2], path_b.parents[2]  # the two runs' working folders
    for key in sorted(keys_a & keys_b):
        a, b = flat_a[key], flat_b[key]
        # asdf hands arrays over as lazy NDArrayType objects, not ndarray subclasses.
        if isinstance(a, gwcs.WCS) and isinstance(b, gwcs.WCS):
            same = a.available_frames == b.available_frames and wcs_samples(a) == wcs_samples(b)
        elif any(hasattr(value, "dtype") and hasattr(value, "shape") for value in (a, b)):
            a, b = np.asarray(a), np.asarray(b)
            same = a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        else:
            same = normalized(a, root_a) == normalized(b, root_b)
            same = bool(np.all(same))
        if not same:
            problems.append(f"{path_a.name}: {key}: {a!r:.80} != {b!r:.80}")
    return problems


def wcs_samples(wcs) -> bytes:
    """A WCS's sky positions on a grid over its bounding box, as bytes: equal WCSs, equal bytes."""
    (x0, x1), (y0, y1) = wcs.bounding_box.bounding_box(order="F")
    x, y = np.meshgrid(np.linspace(x0, x1, 5), np.linspace(y0, y1, 5))
    return np.asarray(wcs(x, y)).tobytes()


def product_files(run: Path, pattern: str) -> list[Path]:
    """A run's products, relative to its folder; hidden folders (caches such as numba's) left out."""
    return sorted(path.relative_to(run) for path in (run / "results").rglob(pattern) if path.is_file()
                  and not any(part.startswith(".") for part in path.relative_to(run / "results").parts))


def product_differences(run_a: Path, run_b: Path, pattern: str = "*") -> list[str]:
    """Differences between the products (matching ``pattern``) of two runs' results folders."""
    files_a, files_b = product_files(run_a, pattern), product_files(run_b, pattern)
    if not files_a or files_a != files_b:
        return [f"different products: {sorted(set(files_a) ^ set(files_b))}"]
    problems = []
    for relative in files_a:
        if relative.suffix == ".asdf":
            problems += model_differences(run_a / relative, run_b / relative)
        else:  # the pool's tables: absolute reference paths name the run's folder
            text_a = normalized((run_a / relative).read_text(), run_a)
            text_b = normalized((run_b / relative).read_text(), run_b)
            if text_a != text_b:
                problems.append(f"{relative} differs")
    return problems


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
    # for the scheduler, and each job costs ~6 s of SLURM overhead here.
    with open(out / "workflow.yaml", "a") as stream:
        stream.write("target: cal\n")
    return out


def fresh_copy(campaign: Path, tmp_path_factory, name: str) -> Path:
    workdir = tmp_path_factory.mktemp(name).resolve() / "campaign"
    shutil.copytree(campaign, workdir)
    return workdir


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


# --- tests -----------------------------------------------------------------------------------


def test_slurm_products_equal_the_local_ones(local_run, slurm_run):
    workdir, _, _ = slurm_run
    assert len(list((workdir / "results" / "exposures").glob("*_saturation.asdf"))) == 4
    assert product_differences(local_run, workdir) == []


def test_the_comparison_sees_a_one_bit_change(local_run, tmp_path):
    """The comparison above must not pass by comparing nothing."""
    product = sorted((local_run / "results" / "exposures").glob("*_saturation.asdf"))[0]
    changed = tmp_path / "run" / "results" / "exposures" / product.name
    changed.parent.mkdir(parents=True)
    with rdm.open(product) as model:
        model.groupdq[0, 10, 10] ^= 1
        model.save(changed)  # with a new file_date: volatile, not a difference
    differing = {problem.split(": ")[1] for problem in model_differences(product, changed)}
    # (the provenance's reference paths differ too: the copy is not in a run folder of its own)
    assert {key for key in differing if ".parameters.override_" not in key} == {"roman.groupdq"}


def test_every_job_was_a_real_slurm_job(local_run, slurm_run):
    workdir, log, in_slurm = slurm_run
    submitted = submissions(log)
    # the pool checkpoint, then one job per product the local run made (the target is _cal)
    rule_of_suffix = {suffix: step for step, suffix in STEP_SUFFIX.items()} | {"cal": "cal"}
    made = [split_suffix(p)[1] for p in (local_run / "results" / "exposures").glob("*.asdf")]
    rules = sorted(path.relative_to(workdir / ".snakemake" / "slurm_logs").parts[0]
                   for _, _, path in submitted)
    assert rules == sorted(["rule_pool"] + [f"rule_{rule_of_suffix[suffix]}" for suffix in made])
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    for _, slurm_id, slurm_log in submitted:
        # slurmctld knows the job (MinJobAge keeps it listed), under this run's name ...
        assert in_slurm[slurm_id]["state"] == "COMPLETED"
        assert in_slurm[slurm_id]["name"] == run_id
        # ... and the job's own log shows Snakemake running the rule inside it
        assert slurm_log.name == f"{slurm_id}.log"
        text = slurm_log.read_text()
        rule = slurm_log.relative_to(workdir / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
        assert re.search(rf"^local(rule|checkpoint) {rule}:$", text, re.MULTILINE)
        assert "1 of 1 steps (100%) done" in text
    assert len(in_slurm) == len(submitted)


def test_a_cancelled_job_is_retried_to_completion(campaign, local_run, tmp_path_factory):
    """scancel a running dq_init or saturation job: restart-times resubmits it, the run succeeds."""
    workdir = fresh_copy(campaign, tmp_path_factory, "cancel")
    # One exposure's saturation product (pool, dq_init, saturation) keeps this run short.
    expo = sorted((workdir / "uncal").glob("*_uncal.asdf"))[0].name.removesuffix("_uncal.asdf")
    command = snakemake_command(workdir, "--profile", str(ROOT / "profiles" / "slurm"),
                                f"results/exposures/{expo}_saturation.asdf")
    log_path = workdir.parent / "snakemake.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=clean_env())
        try:
            cancelled = None
            deadline = time.monotonic() + RUN_TIMEOUT
            while cancelled is None and process.poll() is None and time.monotonic() < deadline:
                running = [job for job in jobs_in(workdir, "RUNNING")
                           if job["comment"].startswith(("rule_dq_init_", "rule_saturation_"))]
                if running:
                    time.sleep(2)  # well inside the job: its Snakemake has started, no product yet
                    cancelled = running[0]
                    subprocess.run(["scancel", cancelled["id"]], check=True, timeout=30)
                else:
                    time.sleep(0.2)
            assert cancelled is not None, "no dq_init or saturation job was seen running"
            returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            cancel_jobs_in(workdir)
    log = log_path.read_text()
    assert returncode == 0, log[-5000:]

    states = {job["id"]: job["state"] for job in jobs_in(workdir)}
    assert states[cancelled["id"]] == "CANCELLED"
    # The cancelled job was submitted again (same rule and wildcards, a new SLURM job) and that
    # one completed; nothing else failed.
    by_slurm_id = {slurm_id: (job, path.parent) for job, slurm_id, path in submissions(log)}
    job, folder = by_slurm_id[cancelled["id"]]
    retries = [other for other, (j, f) in by_slurm_id.items()
               if (j, f) == (job, folder) and other != cancelled["id"]]
    assert len(retries) == 1, log[-5000:]
    assert states[retries[0]] == "COMPLETED"
    assert sorted(states.values()) == ["CANCELLED"] + ["COMPLETED"] * (len(states) - 1)
    assert sorted(job["comment"].split("_wildcards_")[0] for job in jobs_in(workdir)) == sorted(
        ["rule_pool", "rule_dq_init", "rule_saturation", cancelled["comment"].split("_wildcards_")[0]]
    )
    # and the products (up to the saturation target) are the ones the local run made
    assert product_differences(local_run, workdir, f"{expo}_dqinit.asdf") == []
    assert product_differences(local_run, workdir, f"{expo}_saturation.asdf") == []
    assert product_differences(local_run, workdir, "*.csv") == []
