"""A campaign run in shards (scripts/shards.py): Level 2 one visit at a time, then Level 3 over
the union of the shards' _cal products, in groups of sky cells, makes the products of the same
campaign run whole; a dry run says per shard and per group how many jobs remain; a shard run
again touches no other shard, and the Level 3 stage then redoes only the cells of that shard's
exposures; a group run again touches no other group's cells."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from romanpipe.errors import InputFileError
from romanpipe.skycells import cell_selector, product_cell

import pytest
import yaml

from comparison import model_differences, product_differences
from shards import OTHER_SHARD, group_cells, main, plan_shards, shard_key, write_if_changed
from test_incremental import PER_CELL, executed_jobs
from test_workflow import ROOT, snakemake
from wfisim.campaign import CampaignConfig, simulate_campaign

VISIT_1 = "r0000101001001001001_01101_0001_WFI01_uncal.asdf"


def test_a_shard_is_the_name_up_to_its_level():
    assert shard_key(f"uncal/{VISIT_1}", "visit") == "r0000101001001001001"
    assert shard_key(f"uncal/{VISIT_1}", "observation") == "r0000101001001001"
    assert shard_key(f"uncal/{VISIT_1}", "pass") == "r0000101001"
    assert shard_key("uncal/dark_WFI01_uncal.asdf", "visit") == OTHER_SHARD


def test_every_detector_of_a_visit_shares_its_shard():
    paths = [f"u/r0000101001001001{visit:03d}_01101_{expo:04d}_WFI{det:02d}_uncal.asdf"
             for visit in (2, 1) for expo in (1, 2) for det in (1, 2)]
    shards = plan_shards(paths, "visit")
    assert list(shards) == ["r0000101001001001001", "r0000101001001001002"]
    assert all(len(members) == 4 for members in shards.values())
    assert shards["r0000101001001001001"] == sorted(p for p in paths if "001001_" in p)
    assert list(plan_shards(paths, "pass")) == ["r0000101001"]


def test_cells_are_grouped_by_region_row_by_row():
    cells = ["270p65x01y02", "270p65x00y01", "270p65x02y01", "270p65x10y01", "010m05x00y00", "270p65x00y02"]
    assert group_cells(cells, 3) == {
        "010m05-0001": ["010m05x00y00"],
        "270p65-0001": ["270p65x00y01", "270p65x02y01", "270p65x10y01"],
        "270p65-0002": ["270p65x00y02", "270p65x01y02"],
    }
    assert group_cells(cells, 10)["270p65-0001"] == ["270p65x00y01", "270p65x02y01", "270p65x10y01",
                                                      "270p65x00y02", "270p65x01y02"]


def test_a_group_selects_its_cells_by_name_or_pattern():
    selected = cell_selector(["270p65x01y02", "270p65x*y1?"])
    assert [cell for cell in ["270p65x01y02", "270p65x01y03", "270p65x07y15", "270p65x07y150"]
            if selected(cell)] == ["270p65x01y02", "270p65x07y15"]
    assert product_cell("r00001_p_full_270p65x01y02_f158") == "270p65x01y02"
    assert product_cell("r00001-a3001_f158") is None


def test_an_unchanged_list_is_not_rewritten(tmp_path):
    path = tmp_path / "list.csv"
    write_if_changed(path, "path\na\n")
    os.utime(path, (1, 1))
    write_if_changed(path, "path\na\n")
    assert path.stat().st_mtime == 1
    write_if_changed(path, "path\nb\n")
    assert path.read_text() == "path\nb\n"


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(InputFileError, match="absent.yaml: unreadable config: No such file"):
        main(["plan", "--directory", str(tmp_path), "--configfile", str(tmp_path / "absent.yaml")])


@pytest.mark.parametrize("text, problem", [
    ("a: &x [1, 2]\nb: *x\n", "alias"),
    ("- inputs\n", "a config file holds a mapping, not a list"),
])
def test_a_config_file_the_workflow_would_refuse_is_named(tmp_path, text, problem):
    """Read as the workflow's parameter files are (romanpipe.params.load_yaml): no aliases
    (a few lines of them expand to gigabytes), bounded size, a mapping."""
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    with pytest.raises(InputFileError, match=f"campaign.yaml: .*{problem}"):
        main(["plan", "--directory", str(tmp_path), "--configfile", str(path)])


def test_running_before_planning_says_so(tmp_path):
    (tmp_path / "campaign.yaml").write_text("{}")
    with pytest.raises(InputFileError, match="run `shards.py plan` first"):
        main(["run", "--directory", str(tmp_path), "--configfile", str(tmp_path / "campaign.yaml")])
    assert not (tmp_path / "shards").exists()


SKYMAP = {"pixel_scale": 0.11, "nxy_skycell": 100, "border": 10, "region_deg": 5.0}
# One visit per filter (the simulator makes an observation of each): two shards of two exposures.
CAMPAIGN = {"detectors": ["WFI01"], "filters": ["F158", "F087"], "exposures_per_filter": 2,
            "dithers": [[0.0, 0.0], [2.5, 1.5]], "size": 64, "stars": 20, "saturating_stars": 0, "seed": 5,
            "skymap": SKYMAP}
SHARDS = {"r0000101001001001001": "f158", "r0000101001001002001": "f087"}
# Level 3 in groups of at most two sky cells: the campaign's cells make several groups.
CELLS_PER_GROUP = "2"


def run_shards(workdir: Path, *args: str, snakemake_args=()) -> subprocess.CompletedProcess:
    """scripts/shards.py as the README runs it (a clean CRDS environment, as the workflow tests')."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "shards.py"), *args, "--directory",
                           str(workdir), "--configfile", str(workdir / "workflow.yaml"),
                           "--cells-per-group", CELLS_PER_GROUP,
                           "--", "--cores", "2", *snakemake_args],
                          capture_output=True, text=True, env=env, timeout=1800)


def status_lines(workdir: Path) -> list[str]:
    result = run_shards(workdir, "status")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def groups(workdir: Path) -> dict[str, list[str]]:
    """Group -> its sky cells, as shards.py level3 planned them."""
    folder = workdir / "shards" / "level3"
    names = [line.split(",")[0] for line in (folder / "index.csv").read_text().split()[1:]]
    return {name: yaml.safe_load((folder / f"{name}.yaml").read_text())["level3"]["cells"] for name in names}


def modification_times(folder: Path) -> dict[Path, int]:
    """Every file's modification time, but the warm-start servers' logs: a server writes its last
    line when it stops, a minute after its run's last job, whatever else runs then."""
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*")
            if path.is_file() and path.parent.name != "warm"}


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory):
    """The same campaign run whole and in shards (with the dry runs before and after)."""
    simulated = tmp_path_factory.mktemp("simulated")
    simulate_campaign(CampaignConfig.from_mapping(CAMPAIGN), simulated)
    whole, sharded = (tmp_path_factory.mktemp(name) for name in ("whole", "sharded"))
    for out in (whole, sharded):
        shutil.copytree(simulated, out, dirs_exist_ok=True)
    result = snakemake(whole)
    assert result.returncode == 0, result.stderr[-3000:]
    planned = run_shards(sharded, "plan")
    assert planned.returncode == 0, planned.stderr[-3000:]
    before = status_lines(sharded)
    result = run_shards(sharded, "run")
    assert result.returncode == 0, result.stderr[-3000:]
    return whole, sharded, planned.stdout.splitlines(), before, status_lines(sharded)


@pytest.mark.slow
@pytest.mark.xdist_group("workflow")
def test_a_dry_run_says_per_shard_how_many_jobs_remain(campaigns):
    _, sharded, planned, before, after = campaigns
    assert planned == [f"shard {shard}: 2 Level 1 file(s)" for shard in SHARDS]
    # before any run each shard's pool is pending: the pool, the report's tables and `all`
    assert before == [f"shard {shard}: 5 job(s) remain (its pool runs first: the steps of its exposures "
                      "are counted after it)" for shard in SHARDS] + [
        f"level 3: waits for 2 shard(s) to finish ({', '.join(SHARDS)})"]
    cells = groups(sharded)
    assert len(cells) > 1 and all(1 <= len(members) <= int(CELLS_PER_GROUP) for members in cells.values())
    assert after == [f"shard {shard}: nothing to do" for shard in SHARDS] + [
        f"level 3 group {group} ({len(members)} cells): nothing to do" for group, members in cells.items()]


@pytest.mark.slow
@pytest.mark.xdist_group("workflow")
def test_the_sharded_campaign_makes_the_whole_campaigns_products(campaigns):
    whole, sharded, *_ = campaigns
    cal = sorted((whole / "results" / "exposures").glob("*_cal.asdf"))
    assert len(cal) == 4
    for path in cal:
        shard = path.name[:20]
        assert not model_differences(path, sharded / "shards" / shard / "results" / "exposures" / path.name)
    mosaics = sorted(path.name for path in (whole / "results" / "mosaics").glob("*_i2d.asdf"))
    assert mosaics == sorted(path.name for path in (sharded / "results" / "mosaics").glob("*_i2d.asdf"))
    assert {name.split("_")[4] for name in mosaics} == set(SHARDS.values())
    # every Level 3 product: mosaics, their catalogs and segmentation maps, the cells' multiband
    # catalogs and the quicklooks, the same whichever group made them
    for pattern in ("r00001_p_full_*_i2d.asdf", "r00001_p_full_*_cat.parquet", "r00001_p_full_*_segm.asdf",
                    "r00001_p_full_*_i2d.png", "r00001_p_full_*_multiband.png"):
        assert not product_differences(whole, sharded, pattern), pattern
    # each group's provenance table names its own cells' mosaics, and together they name all
    named = []
    for group, members in groups(sharded).items():
        table = (sharded / "results" / "groups" / group / "provenance.csv").read_text()
        named += [name for name in mosaics if name.removesuffix("_i2d.asdf") in table]
        assert all(product_cell(name.removesuffix("_i2d.asdf")) in members
                   for name in mosaics if name.removesuffix("_i2d.asdf") in table), group
    assert sorted(named) == mosaics
    # Level 3 planned no Level 2 job: its results hold no exposure product and no pool
    assert not (sharded / "results" / "exposures").exists()
    assert not (sharded / "results" / "pool.csv").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("workflow")
def test_a_shard_run_again_touches_no_other_shard_and_level3_only_its_cells(campaigns):
    _, sharded, *_ = campaigns
    again, other = SHARDS
    untouched = modification_times(sharded / "shards" / other)
    mosaics = modification_times(sharded / "results" / "mosaics")
    result = run_shards(sharded, "run", "--shard", again, snakemake_args=["--forceall"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule dq_init:" in result.stderr  # the shard did run again
    assert modification_times(sharded / "shards" / other) == untouched
    assert modification_times(sharded / "results" / "mosaics") == mosaics  # Level 3 waits for `level3`
    result = run_shards(sharded, "level3")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = executed_jobs(result.stdout + result.stderr)
    redone = {w.get("asn") or w.get("product") for rule, w in jobs if rule in PER_CELL}
    assert redone and all(name.endswith(f"_{SHARDS[again]}") for name in redone), redone
    for path, mtime in mosaics.items():
        if path.name.endswith("_i2d.asdf"):
            changed = path.stat().st_mtime_ns != mtime
            assert changed == (f"_{SHARDS[again]}_" in path.name), path.name


def cell_files(results: Path, cells: list[str]) -> dict[Path, int]:
    """Modification times of the Level 3 files of ``cells`` (their names hold the cell's)."""
    return {path: mtime for path, mtime in modification_times(results).items()
            if any(cell in str(path.relative_to(results)) for cell in cells)}


@pytest.mark.slow
@pytest.mark.xdist_group("workflow")
def test_a_group_run_again_touches_no_other_groups_cells(campaigns):
    _, sharded, *_ = campaigns
    cells = groups(sharded)
    again = next(iter(cells))
    others = [cell for group, members in cells.items() if group != again for cell in members]
    results = sharded / "results"
    untouched, own = cell_files(results, others), cell_files(results, cells[again])
    assert untouched and own
    result = run_shards(sharded, "level3", "--group", again, snakemake_args=["--forceall"])
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = executed_jobs(result.stdout + result.stderr)
    redone = {product_cell(w.get("asn") or w.get("product")) for rule, w in jobs if rule in PER_CELL}
    assert redone == set(cells[again]), redone
    assert {w["cell"].split("_")[3] for rule, w in jobs if rule == "multiband_catalog"} == set(cells[again])
    assert cell_files(results, others) == untouched
    assert all(cell_files(results, cells[again])[path] != mtime for path, mtime in own.items()
               if path.name.endswith(("_i2d.asdf", "_cat.parquet")))
    # and every group is still up to date (the other groups' products did not go stale)
    assert status_lines(sharded)[len(SHARDS):] == [
        f"level 3 group {group} ({len(members)} cells): nothing to do" for group, members in cells.items()]


@pytest.mark.slow
@pytest.mark.xdist_group("workflow")
def test_a_group_run_leaves_other_runs_writes_alone(campaigns):
    """Groups run side by side: a group's run does not sweep the staging files another run is
    writing; `groups` lists the groups it wrote."""
    _, sharded, *_ = campaigns
    cells = groups(sharded)
    group, other = list(cells)[:2]
    writing = sharded / "results" / "mosaics" / f".r00001_p_full_{cells[other][0]}_f158_i2d.asdf.1.staging"
    writing.write_bytes(b"half a mosaic")
    configs = [sharded / "workflow.yaml", sharded / "shards" / "level3.yaml",
               sharded / "shards" / "level3" / f"{group}.yaml"]
    result = snakemake(sharded, "--configfile", *map(str, configs))
    assert result.returncode == 0, result.stderr[-3000:]
    assert writing.read_bytes() == b"half a mosaic"
    result = run_shards(sharded, "groups")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-len(cells):] == [f"level 3 group {name}: {len(members)} cell(s)"
                                          for name, members in cells.items()]
