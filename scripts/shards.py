"""shards: run a campaign too large for one Snakemake plan, in shards.

Level 2 is planned and run one shard at a time: a shard holds the exposures of one visit (or
pass, segment or observation: ``--by``; every detector of an exposure is in the same shard, so
tweakreg's exposure groups stay whole), and each shard is an ordinary run of the workflow with
its own exposure list, results and logs (``shards/<shard>/``) and target ``cal``. Level 3 then
runs once over the union of the shards' ``_cal`` products (``inputs.cal_list``): the workflow
loads no Level 2 rule for it, so it plans only the sky-cell associations and their mosaics,
in the campaign's own ``results_dir``. A shard's folder and name depend only on its
exposures' names, so a shard run again (or one that gains an exposure) touches no other.
Level 3 itself is planned in groups of sky cells: the association checkpoint runs once over
the union, then each group of at most ``--cells-per-group`` cells of one projection region is
a run of its own (``level3.cells``, ``level3.group``) that plans only its cells' jobs.

    python scripts/shards.py plan   --configfile campaign.yaml [--by visit]
    python scripts/shards.py status --configfile campaign.yaml [--parallel N]
    python scripts/shards.py run    --configfile campaign.yaml [--shard S ...] [-- SNAKEMAKE ARGS]
    python scripts/shards.py groups --configfile campaign.yaml [--cells-per-group N]
    python scripts/shards.py level3 --configfile campaign.yaml [--group G ...] [--parallel N] [-- ARGS]

``plan`` writes each shard's exposure list and config (a file is rewritten only when it
changes, so a re-plan reruns nothing) and ``shards/index.csv``; ``status`` dry-runs every
shard and each group of sky cells of the Level 3 stage and prints one line each: how many jobs
remain; ``run`` runs the shards (all, or those named), then Level 3 when every shard was asked
for; ``level3`` runs Level 3 alone (its associations, then every group of cells, or those
named); ``groups`` makes the associations and the groups only (for a job array of groups).
Arguments after ``--`` go to every Snakemake run (``--profile profiles/slurm``, ``--cores 8``,
...). Paths are relative to ``--directory``, as Snakemake's are.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from romanpipe import cli
from romanpipe.errors import InputFileError, ParameterError, PipelineError
from romanpipe.exposure_types import MOSAIC_TYPES
from romanpipe.failures import read_ledger
from romanpipe.files import atomic_path
from romanpipe.inputs import InputListError, listed_paths
from romanpipe.naming import EXPOSURE_NAME_RE, split_suffix
from romanpipe.params import load_yaml
from romanpipe.skycells import cell_place, cell_region, product_cell

import pandas as pd
import yaml

log = logging.getLogger("shards")

ROOT = Path(__file__).resolve().parents[1]
# The name fields that make a shard's key, from the largest unit to the smallest.
LEVELS = ("pass", "segment", "observation", "visit")
KEY_FIELDS = ("program", "execution_plan", "pass", "segment", "observation", "visit")
# Inputs whose names are not Roman exposure names go to one shard of their own (their pool
# quarantines the unusable ones, as an unsharded run's would).
OTHER_SHARD = "other"
SHARDS_DIR = "shards"
INDEX = "index.csv"
CAL_LIST = "cal.csv"
LEVEL3_CONFIG = "level3.yaml"
# The groups of sky cells of the Level 3 stage: shards/level3/index.csv and a config per group.
GROUPS_DIR = "level3"
# A group's plan grows with its cells (about seven jobs a cell); this many keep the time to its
# first job within a minute (README, "Running a campaign in shards").
CELLS_PER_GROUP = 500
TOTAL_JOBS = re.compile(r"^total\s+(\d+)\s*$", re.MULTILINE)
POOL_PENDING = re.compile(r"^pool\s+1\s*$", re.MULTILINE)


def shard_key(path: str, level: str) -> str:
    """The shard of a Level 1 file: its name up to the ``level`` field (a visit is
    ``r<ppppp><cc><aaa><sss><ooo><vvv>``), or OTHER_SHARD."""
    match = EXPOSURE_NAME_RE.match(split_suffix(path)[0])
    if not match:
        return OTHER_SHARD
    fields = KEY_FIELDS[: KEY_FIELDS.index(level) + 1]
    return "r" + "".join(match[field] for field in fields)


def plan_shards(paths: list[str], level: str) -> dict[str, list[str]]:
    """Shard -> its Level 1 files, both sorted."""
    shards: dict[str, list[str]] = {}
    for path in paths:
        shards.setdefault(shard_key(path, level), []).append(path)
    return {key: sorted(shards[key]) for key in sorted(shards)}


def campaign_config(configfiles: list[Path]) -> dict:
    """The campaign's settings as the workflow sees them: the defaults, then each file on top."""
    config = load_yaml(ROOT / "config" / "config.yaml")
    for path in configfiles:
        try:
            overrides = load_yaml(path) or {}
        except OSError as err:
            raise InputFileError(path, f"unreadable config: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise InputFileError(path, f"not YAML: {str(err).splitlines()[0]}") from None
        except ParameterError as err:
            raise InputFileError(path, str(err).removeprefix(f"{path}: ")) from None
        if not isinstance(overrides, dict):
            raise InputFileError(path, f"a config file holds a mapping, not a {type(overrides).__name__}")
        update(config, overrides)
    return config


def update(config: dict, overrides: dict) -> None:
    """Merge ``overrides`` into ``config`` key by key, as Snakemake merges config files."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            update(config[key], value)
        else:
            config[key] = value


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it: an unchanged file keeps its time, so
    Snakemake sees nothing new."""
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as staging:
        Path(staging).write_text(text)


def path_table(paths: list[str]) -> str:
    """A CSV with one column ``path`` (the workflow's exposure and _cal lists)."""
    return "path\n" + "".join(f"{path}\n" for path in paths)


class Campaign:
    """A campaign's working folder, its settings and its shards."""

    def __init__(self, workdir: Path, configfiles: list[Path], snakemake_args: list[str]):
        self.workdir = workdir
        self.configfiles = [path.resolve() for path in configfiles]
        self.config = campaign_config(self.configfiles)
        self.snakemake_args = snakemake_args
        self.shards_dir = workdir / SHARDS_DIR

    def shard_dir(self, shard: str) -> Path:
        return self.shards_dir / shard

    def shard_settings(self, shard: str) -> dict:
        """A shard's settings on top of the campaign's: its exposures, folders and Level 2 target."""
        folder = f"{SHARDS_DIR}/{shard}"
        target = "cal" if self.config["target"] == "i2d" else self.config["target"]
        return {"inputs": {"exposure_list": f"{folder}/exposures.csv"}, "results_dir": f"{folder}/results",
                "logs_dir": f"{folder}/logs", "target": target}

    def plan(self, level: str) -> dict[str, list[str]]:
        inputs = self.config["inputs"]
        if inputs["exposure_list"]:
            try:
                paths = listed_paths(None, str(self.workdir / inputs["exposure_list"]))
            except InputListError as err:
                raise PipelineError(str(err)) from None
        else:
            found = listed_paths(str(self.workdir / inputs["uncal_dir"]), None)
            paths = [os.path.join(inputs["uncal_dir"], os.path.basename(path)) for path in found]
        if not paths:
            raise PipelineError(f"{self.workdir}: no Level 1 inputs (inputs.uncal_dir="
                                f"{inputs['uncal_dir']!r}, inputs.exposure_list={inputs['exposure_list']!r})")
        shards = plan_shards(paths, level)
        for shard, members in shards.items():
            write_if_changed(self.shard_dir(shard) / "exposures.csv", path_table(members))
            write_if_changed(self.shard_dir(shard) / "config.yaml",
                             yaml.safe_dump(self.shard_settings(shard), sort_keys=True))
        write_if_changed(self.shards_dir / INDEX,
                         "shard,files\n" + "".join(f"{shard},{len(m)}\n" for shard, m in shards.items()))
        return shards

    def shards(self) -> list[str]:
        index = self.shards_dir / INDEX
        if not index.is_file():
            raise InputFileError(index, "no shards planned yet: run `shards.py plan` first")
        return list(pd.read_csv(index, dtype=str, keep_default_na=False)["shard"])

    def snakemake(self, extra_configfiles: list[Path], *args: str) -> list[str]:
        """The Snakemake command of one run: the campaign's config files, then the run's own."""
        return [sys.executable, "-m", "snakemake", *self.snakemake_args, *args,
                "--snakefile", str(ROOT / "Snakefile"), "--directory", str(self.workdir),
                "--configfile", *map(str, self.configfiles),
                *(str(path.resolve()) for path in extra_configfiles)]

    def environment(self) -> dict[str, str]:
        """Every run shares the campaign's caches of compiled kernels and PSFs (the environment's
        own folders win, as they do for the workflow)."""
        cache = (self.workdir / self.config["results_dir"] / ".cache").resolve()
        return {"NUMBA_CACHE_DIR": str(cache / "numba"), "ROMANPIPE_PSF_CACHE": str(cache / "psf")} | dict(
            os.environ)

    def shard_command(self, shard: str, *args: str) -> list[str]:
        return self.snakemake([self.shard_dir(shard) / "config.yaml"], *args)

    def cal_products(self, shards: list[str]) -> tuple[list[str], dict[str, str]]:
        """The imaging _cal products of the shards (those that failed after their pool left
        out), and shard -> why it is not finished."""
        products, unfinished = [], {}
        for shard in shards:
            results = f"{SHARDS_DIR}/{shard}/results"
            pool_path = self.workdir / results / "pool.csv"
            if not pool_path.is_file():
                unfinished[shard] = "its pool has not run"
                continue
            pool = pd.read_csv(pool_path, dtype=str, keep_default_na=False)
            failed = read_ledger(self.workdir / results / "failed.csv", pool_path)
            kept = pool["exposure_type"].isin(MOSAIC_TYPES) & ~pool["exposure"].isin(failed)
            imaging = pool["exposure"][kept]
            cal = [f"{results}/exposures/{expo}_cal.asdf" for expo in imaging]
            missing = [path for path in cal if not (self.workdir / path).is_file()]
            if missing:
                unfinished[shard] = f"{len(missing)} _cal product(s) not made yet, e.g. {missing[0]}"
            products += cal
        return sorted(products), unfinished

    def level3_config(self) -> Path | None:
        """Write the Level 3 stage's _cal list and config; None (and a line per shard) while a
        shard is unfinished."""
        products, unfinished = self.cal_products(self.shards())
        for shard, reason in unfinished.items():
            log.error("shard %s is not finished: %s", shard, reason)
        if unfinished:
            return None
        write_if_changed(self.shards_dir / CAL_LIST, path_table(products))
        config = self.shards_dir / LEVEL3_CONFIG
        write_if_changed(config, yaml.safe_dump({"inputs": {"cal_list": f"{SHARDS_DIR}/{CAL_LIST}"}}))
        return config

    def association_index(self) -> str:
        """The association checkpoint's index, relative to the campaign's folder (as Snakemake's targets)."""
        return os.path.join(self.config["results_dir"], "associations.csv")

    def associations_command(self, level3_config: Path, *args: str) -> list[str]:
        """The Level 3 stage's run of its association checkpoint alone (its index as the target)."""
        return self.snakemake([level3_config], *args, self.association_index())

    def plan_groups(self, cells_per_group: int) -> dict[str, list[str]]:
        """Group -> its sky cells, from the association index (written by the checkpoint); each
        group's config and ``shards/level3/index.csv`` written."""
        index = self.workdir / self.association_index()
        try:
            products = pd.read_csv(index, dtype=str, keep_default_na=False)["product"]
        except (OSError, KeyError, pd.errors.ParserError) as err:
            raise InputFileError(index, f"no association index to group cells from: {err}") from None
        product_cells = [product_cell(product) for product in products]
        if None in product_cells:
            raise InputFileError(index, "level 3 in groups needs sky-cell associations (grouping: skycell), "
                                        f"not {products[product_cells.index(None)]!r}")
        groups = group_cells(sorted(set(product_cells)), cells_per_group)
        folder = self.shards_dir / GROUPS_DIR
        for group, members in groups.items():
            write_if_changed(folder / f"{group}.yaml",
                             yaml.safe_dump({"level3": {"cells": members, "group": group}}, sort_keys=True))
        write_if_changed(folder / INDEX,
                         "group,cells\n" + "".join(f"{group},{len(m)}\n" for group, m in groups.items()))
        return groups

    def group_command(self, level3_config: Path, group: str, *args: str) -> list[str]:
        return self.snakemake([level3_config, self.shards_dir / GROUPS_DIR / f"{group}.yaml"], *args)


def group_cells(cells: list[str], cells_per_group: int) -> dict[str, list[str]]:
    """Group -> its cells: each projection region's cells, row by row, in runs of at most
    ``cells_per_group`` (a group is a band of neighbouring cells, which an image's cells mostly
    share). A group is named after its region and its place there: ``270p65-0001``."""
    regions: dict[str, list[str]] = {}
    for cell in cells:
        regions.setdefault(cell_region(cell), []).append(cell)
    groups = {}
    for region, members in sorted(regions.items()):
        members.sort(key=lambda cell: cell_place(cell)[::-1])
        for number, start in enumerate(range(0, len(members), cells_per_group), start=1):
            groups[f"{region}-{number:04d}"] = members[start: start + cells_per_group]
    return groups


def remaining_jobs(command: list[str], env: dict[str, str]) -> str:
    """What a dry run says remains to do, in a few words."""
    result = subprocess.run([*command, "-n", "--quiet", "rules"], capture_output=True, text=True, env=env,
                            check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        last = output.strip().splitlines()[-1] if output.strip() else f"exit status {result.returncode}"
        return f"the dry run failed: {last}"
    total = TOTAL_JOBS.search(output)
    if not total:
        return "nothing to do"
    line = f"{total[1]} job(s) remain"
    if POOL_PENDING.search(output):
        line += " (its pool runs first: the steps of its exposures are counted after it)"
    return line


def status(campaign: Campaign, parallel: int, cells_per_group: int) -> list[str]:
    """One line per shard, then Level 3's: its associations while they are to be made, else one
    line per group of cells: how many jobs remain."""
    shards = campaign.shards()
    env = campaign.environment()
    with ThreadPoolExecutor(parallel) as pool:
        remaining = pool.map(lambda shard: remaining_jobs(campaign.shard_command(shard), env), shards)
        lines = [f"shard {shard}: {words}" for shard, words in zip(shards, remaining, strict=True)]
    if campaign.config["target"] != "i2d":
        return lines
    products, unfinished = campaign.cal_products(shards)
    if unfinished:
        named = ", ".join(list(unfinished)[:3]) + (", ..." if len(unfinished) > 3 else "")
        lines.append(f"level 3: waits for {len(unfinished)} shard(s) to finish ({named})")
        return lines
    config = campaign.level3_config()
    words = remaining_jobs(campaign.associations_command(config), env)
    if words != "nothing to do":
        lines.append(f"level 3 ({len(products)} _cal products): {words} (its associations run first: "
                     "the groups of sky cells are counted after them)")
        return lines
    groups = campaign.plan_groups(cells_per_group)
    with ThreadPoolExecutor(parallel) as pool:
        remaining = pool.map(lambda group: remaining_jobs(campaign.group_command(config, group), env), groups)
        lines += [f"level 3 group {group} ({len(groups[group])} cells): {words}"
                  for group, words in zip(groups, remaining, strict=True)]
    return lines


def run_shards(campaign: Campaign, shards: list[str], parallel: int) -> list[str]:
    """Run the shards, ``parallel`` at a time; the shards whose run failed."""
    env = campaign.environment()

    def run(shard: str) -> int:
        log.info("shard %s: running", shard)
        return subprocess.run(campaign.shard_command(shard), env=env, check=False).returncode

    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(run, shards))
    return [shard for shard, code in zip(shards, codes, strict=True) if code != 0]


def level3_groups(campaign: Campaign, cells_per_group: int) -> tuple[Path, dict[str, list[str]]]:
    """Run the association checkpoint over every shard's _cal, then cut the cells into groups:
    the Level 3 stage's config and group -> its cells."""
    config = campaign.level3_config()
    if config is None:
        raise PipelineError("level 3 not run: the shards above are not finished")
    code = subprocess.run(campaign.associations_command(config), env=campaign.environment(),
                          check=False).returncode
    if code != 0:
        raise PipelineError(f"level 3: the associations' snakemake exited with status {code}")
    return config, campaign.plan_groups(cells_per_group)


def run_level3(campaign: Campaign, cells_per_group: int, parallel: int,
               only: list[str] | None = None) -> None:
    """The association checkpoint over every shard's _cal, then each group of cells (those in
    ``only``, if given), ``parallel`` at a time."""
    config, groups = level3_groups(campaign, cells_per_group)
    env = campaign.environment()
    unknown = sorted(set(only or []) - set(groups))
    if unknown:
        raise PipelineError(f"{campaign.shards_dir / GROUPS_DIR / INDEX}: no group {', '.join(unknown)}")

    def run(group: str) -> int:
        log.info("level 3 group %s: running", group)
        return subprocess.run(campaign.group_command(config, group), env=env, check=False).returncode

    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(run, only or groups))
    failed = [group for group, code in zip(only or groups, codes, strict=True) if code != 0]
    if failed:
        raise PipelineError(f"level 3 group(s) {', '.join(failed)}: snakemake exited non-zero")


def parse_args(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    snakemake_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="shards.py", description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after -- go to every Snakemake run.")
    parser.add_argument("command", choices=("plan", "status", "run", "groups", "level3"))
    parser.add_argument("--configfile", type=Path, nargs="+", required=True,
                        help="the campaign's config files, as given to snakemake")
    parser.add_argument("--directory", type=Path, default=Path("."), help="the campaign's working folder")
    parser.add_argument("--by", choices=LEVELS, default="visit",
                        help="what a shard holds (plan; default: visit)")
    parser.add_argument("--shard", nargs="+",
                        help="run only these shards (run; Level 3 is then left to `level3`)")
    parser.add_argument("--group", nargs="+",
                        help="run only these groups of sky cells (level3; see shards/level3/index.csv)")
    parser.add_argument("--cells-per-group", type=int, default=CELLS_PER_GROUP,
                        help="sky cells in a Level 3 group at most (status, run, groups, level3; "
                             f"default {CELLS_PER_GROUP})")
    parser.add_argument("--parallel", type=int, default=1,
                        help="shards or groups of cells run or dry-run at once (default 1)")
    args = parser.parse_args(argv)
    if args.cells_per_group < 1:
        parser.error("--cells-per-group must be at least 1")
    args.snakemake_args = snakemake_args
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cli.setup_logging()
    campaign = Campaign(args.directory, args.configfile, args.snakemake_args)
    if args.command == "plan":
        for shard, members in campaign.plan(args.by).items():
            sys.stdout.write(f"shard {shard}: {len(members)} Level 1 file(s)\n")
    elif args.command == "status":
        lines = status(campaign, args.parallel, args.cells_per_group)
        sys.stdout.write("".join(f"{line}\n" for line in lines))
    elif args.command == "groups":
        _, groups = level3_groups(campaign, args.cells_per_group)
        sys.stdout.write("".join(f"level 3 group {group}: {len(cells)} cell(s)\n"
                                 for group, cells in groups.items()))
    elif args.command == "level3":
        run_level3(campaign, args.cells_per_group, args.parallel, args.group)
    else:
        known = campaign.shards()
        unknown = sorted(set(args.shard or []) - set(known))
        if unknown:
            raise PipelineError(f"{campaign.shards_dir / INDEX}: no shard {', '.join(unknown)}")
        failed = run_shards(campaign, args.shard or known, args.parallel)
        # A shard whose exposure failed after its pool still made the others' _cal (and
        # recorded the failure): Level 3 goes on without it, as an unsharded run's second pass does.
        if not args.shard and campaign.config["target"] == "i2d":
            run_level3(campaign, args.cells_per_group, args.parallel)
        if failed:
            raise PipelineError(f"shard(s) {', '.join(failed)}: snakemake exited non-zero "
                                f"(see {SHARDS_DIR}/<shard>/logs)")


if __name__ == "__main__":
    cli.run_and_exit(main)
