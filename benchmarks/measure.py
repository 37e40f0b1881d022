"""Helpers shared by the benchmarks: measured runs, parity statistics, markdown tables.

``run_measured`` runs a command under ``/usr/bin/time -v`` (wall, user and system
seconds, peak resident set size of the largest process); ``parity_stats`` compares
our array with romancal's in units of the pixel error; ``markdown_table`` formats rows.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

_TIME_FIELDS = {
    "wall_s": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)",
    "user_s": r"User time \(seconds\): (\S+)",
    "system_s": r"System time \(seconds\): (\S+)",
    "max_rss_kb": r"Maximum resident set size \(kbytes\): (\d+)",
}


def parse_time_v(report: str) -> dict[str, float]:
    """Wall, user and system seconds and peak RSS (kB) from a ``/usr/bin/time -v`` report."""
    values = {}
    for name, pattern in _TIME_FIELDS.items():
        text = re.search(pattern, report).group(1)
        if name == "wall_s":
            seconds = 0.0
            for part in text.split(":"):
                seconds = seconds * 60 + float(part)
            values[name] = seconds
        else:
            values[name] = float(text)
    return values


def run_measured(command: list[str], env: dict[str, str], log: Path | None = None,
                 cwd: Path | None = None) -> dict[str, float]:
    """Run ``command`` under ``/usr/bin/time -v``; its output goes to ``log`` when given."""
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env,
                            cwd=cwd)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return parse_time_v(result.stderr)


def cpu_seconds(figures: dict[str, float]) -> float:
    return figures["user_s"] + figures["system_s"]


def warm_log_sizes(folder: Path) -> dict[str, int]:
    """How far each warm-start server's log in ``folder`` reaches now (bytes): what a later
    :func:`add_warm_workers` leaves out, as an earlier run's."""
    return {log.name: log.stat().st_size for log in folder.glob("*.log")} if folder.is_dir() else {}


def add_warm_workers(figures: dict[str, float], folder: Path, already_logged: dict[str, int] | None = None,
                     timeout: float = 30.0) -> dict[str, float]:
    """``figures`` of a workflow run with what its warm-start servers spent (romanpipe.warm).

    Jobs run warm are not children of Snakemake, so ``/usr/bin/time`` does not count them:
    the servers are stopped (their lock files removed), and the CPU each one logs at its exit
    (its imports and every job it ran) is added, with the largest job's peak memory. A run
    in a folder with earlier runs' results reuses their servers' logs: only what was logged
    beyond ``already_logged`` (:func:`warm_log_sizes` before the run) counts.
    """
    already_logged = already_logged or {}
    logs = sorted(folder.glob("*.log")) if folder.is_dir() else []
    for lock_file in folder.glob("*.lock") if folder.is_dir() else []:
        lock_file.unlink()

    def this_run(log: Path) -> str:
        with log.open() as stream:
            stream.seek(already_logged.get(log.name, 0))
            return stream.read()

    deadline = time.monotonic() + timeout
    cpu, peak_kb = 0.0, 0
    for log in logs:
        while "exits:" not in this_run(log) and time.monotonic() < deadline:
            time.sleep(0.2)
        for line in this_run(log).splitlines():
            record = json.loads(line.split(" exits: ", 1)[1]) if " exits: " in line else (
                json.loads(line) if line.startswith("{") else {})
            cpu += record.get("server_cpu", 0.0) + record.get("jobs_cpu", 0.0)
            peak_kb = max(peak_kb, record.get("max_rss_kb", 0))
    return {**figures, "user_s": figures["user_s"] + cpu, "max_rss_kb": max(figures["max_rss_kb"], peak_kb)}


def warm_servers_folder(folder: Path) -> Path:
    """Where a workflow run in ``folder`` keeps its warm-start servers' locks and logs (the
    workflow's ``ROMANPIPE_WARM_DIR``)."""
    return folder / "results" / ".cache" / "warm"


def run_workflow(folder: Path, env: dict[str, str], *extra: str, cores: int = 2) -> dict[str, float]:
    """Our workflow on ``folder`` (:func:`snakemake_command`) under ``/usr/bin/time``, with what
    this run's warm-start servers spent (:func:`add_warm_workers`)."""
    already_logged = warm_log_sizes(warm_servers_folder(folder))
    figures = run_measured(snakemake_command(folder, *extra, cores=cores), env, log=folder / "snakemake.log")
    return add_warm_workers(figures, warm_servers_folder(folder), already_logged)


def parity_stats(ours, theirs, error, *, ours_dq=None, theirs_dq=None, usable=None) -> dict[str, float]:
    """|ours − theirs| / error over the pixels both sides could compute, and DQ agreement.

    A pixel is compared where both values are finite, ``error`` is finite and positive,
    and ``usable`` (if given, e.g. neither side's DO_NOT_USE) holds. ``dq_agreement`` is
    the fraction of all pixels whose DQ words are equal (NaN without DQ arrays).
    """
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    error = np.broadcast_to(np.asarray(error, np.float64), ours.shape)
    compared = np.isfinite(ours) & np.isfinite(theirs) & np.isfinite(error) & (error > 0)
    if usable is not None:
        compared &= np.broadcast_to(usable, ours.shape)
    scaled = np.abs(ours - theirs)[compared] / error[compared]
    stats = {
        "pixels": int(compared.sum()),
        "median": float(np.median(scaled)) if scaled.size else float("nan"),
        "p999": float(np.percentile(scaled, 99.9)) if scaled.size else float("nan"),
        "dq_agreement": float("nan"),
    }
    if ours_dq is not None and theirs_dq is not None:
        stats["dq_agreement"] = float(np.mean(np.asarray(ours_dq) == np.asarray(theirs_dq)))
    return stats


def format_number(value: float | int | str | None, digits: int = 3) -> str:
    """Significant digits for statistics; '—' where there is nothing to report."""
    if value is None or isinstance(value, str):
        return value or "—"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if not np.isfinite(value):
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** digits or abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers through :func:`format_number`, '|' in text escaped."""
    def cell(value):
        text = value if isinstance(value, str) else format_number(value)
        return text.replace("|", "\\|")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine_description() -> str:
    """Machine, versions and date, for the heading of a results table."""
    import importlib.metadata as metadata

    versions = []
    for package in ("numpy", "roman_datamodels", "romancal", "stcal", "romanisim", "snakemake"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"{platform.node()}: {os.cpu_count()} cores, {memory_gb:.0f} GB, "
            f"Python {platform.python_version()}; {'; '.join(versions)}; "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average at the end {load}")


ROOT = Path(__file__).resolve().parents[1]
DITHERS = [[0.0, 0.0], [3.5, 2.0], [6.0, 4.5], [9.5, 6.5]]  # the four half-pixel phases
STARS_PER_FULL_DETECTOR = 2000


def campaign_config(size: int, ma_table: str, psf: str = "gaussian") -> dict:
    """Our simulator's campaign of four dithered F158 exposures of WFI01 (``psf``: its star model)."""
    scale = (size / 4096) ** 2
    return {
        "title": f"benchmark campaign {size} {ma_table}", "detectors": ["WFI01"], "filters": ["F158"],
        "exposures_per_filter": len(DITHERS), "dithers": DITHERS, "size": size, "ma_table": ma_table,
        "seed": 2027, "stars": max(40, round(STARS_PER_FULL_DETECTOR * scale)),
        "saturating_stars": max(2, round(20 * scale)), "sky_e_per_s": 1.0,
        "cosmic_ray_flux_per_cm2_s": 5.0, "psf": psf,
    }


def simulate_campaign(folder: Path, size: int, ma_table: str, env: dict[str, str],
                      psf: str = "gaussian") -> list[Path]:
    """Four dithered F158 exposures of WFI01 by our simulator (once: reused when present)."""
    uncal = sorted((folder / "uncal").glob("*_uncal.asdf"))
    if uncal:
        return uncal
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "campaign.yaml"
    config_path.write_text(yaml.safe_dump(campaign_config(size, ma_table, psf)))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), "campaign", "--config",
                    str(config_path), "--out", str(folder), "-q"], check=True, env=env)
    return sorted((folder / "uncal").glob("*_uncal.asdf"))


def one_exposure_campaign(folder: Path, size: int) -> None:
    """A fresh ``folder`` with one small simulated WFI01 F158 exposure, its CRDS cache and
    workflow.yaml: for measuring what the workflow costs around the steps, not the steps."""
    from wfisim.campaign import CampaignConfig
    from wfisim.campaign import simulate_campaign as simulate

    if folder.exists():
        shutil.rmtree(folder)
    simulate(CampaignConfig.from_mapping({
        "detectors": ["WFI01"], "filters": ["F158"], "exposures_per_filter": 1, "size": size,
        "stars": 4, "saturating_stars": 1, "seed": 1,
    }), folder)


def snakemake_command(folder: Path, *extra: str, cores: int = 2) -> list[str]:
    """Our workflow on ``folder`` with the local profile (as `make demo` runs it)."""
    snakemake = Path(sys.executable).with_name("snakemake")
    return [str(snakemake), "--profile", str(ROOT / "profiles" / "local"), "--cores", str(cores),
            "--snakefile", str(ROOT / "Snakefile"), "--directory", str(folder),
            "--configfile", str(folder / "workflow.yaml"), *extra, "--quiet", "all"]


def documented_outlier_settings(folder: Path) -> list[str]:
    """Snakemake arguments: ``folder``'s workflow.yaml and, over it, a config file running our
    outlier_detection at the romancal documentation's grid and ``scale`` (the schema's defaults), not the
    workflow configuration's finer grid, and resample with peer.PEER_RESAMPLE_WEIGHT: romancal has
    neither setting, and a comparison is like with like."""
    from romanpipe.params import step_defaults

    import yaml
    from peer import PEER_RESAMPLE_WEIGHT

    defaults = step_defaults("outlier_detection")
    path = folder / "documented_outlier_detection.yaml"
    path.write_text(yaml.safe_dump({
        "outlier_detection": {name: defaults[name] for name in ("pixel_scale_ratio", "scale")},
        "resample": {"weight_type": PEER_RESAMPLE_WEIGHT}}))
    return ["--configfile", str(folder / "workflow.yaml"), str(path)]


def clean_environment() -> dict[str, str]:
    """The caller's environment without a CRDS server: everything comes from the local cache."""
    env = dict(os.environ)
    env.pop("CRDS_SERVER_URL", None)
    env.pop("CRDS_PATH", None)
    return env
