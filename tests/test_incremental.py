"""Level 3 on sky cells is incremental: a campaign that gains or loses an exposure re-mosaics
exactly the cells that exposure touches, and nothing else runs (besides the campaign-wide
tables that gather from every product)."""

import re
import shutil
from pathlib import Path

from romanpipe.skycells import SkyMap

import pytest
import roman_datamodels as rdm

from test_workflow import snakemake
from wfisim.campaign import CampaignConfig, simulate_campaign

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow")]

# Three close dithers, then one 90 x 60 pixels away: with 200-pixel cells of 0.11" the first three
# touch four cells, the fourth two of them and one more (checked below, not assumed).
DITHERS = [[0.0, 0.0], [2.5, 1.5], [5.0, 3.5], [90.0, 60.0]]
SKYMAP = {"pixel_scale": 0.11, "nxy_skycell": 200, "border": 10, "region_deg": 5.0}
PER_EXPOSURE = {"dq_init", "saturation", "refpix", "linearity", "dark_current", "jump", "ramp_fit",
                "assign_wcs", "flat_field", "photom", "source_detection", "tweakreg", "source_catalog", "cal",
                "quicklook_cal"}
PER_CELL = {"association_file", "flux", "skymatch", "outlier_detection", "resample", "quicklook_mosaic",
            "source_catalog_mosaic"}
# Jobs that read the whole campaign: the checkpoints and the report's tables.
CAMPAIGN_WIDE = {"pool", "associations", "quarantine_table", "provenance", "benchmarks", "all"}
JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


def executed_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a Snakemake run started, from its log."""
    jobs, current = [], None
    for line in output.splitlines():
        header = JOB_HEADER.match(line.strip()) if not line.startswith(" ") else None
        if header:
            current = (header[1], {})
            jobs.append(current)
        elif current and line.strip().startswith("wildcards:"):
            for pair in line.strip().removeprefix("wildcards:").split(","):
                key, _, value = pair.strip().partition("=")
                current[1][key] = value
    return jobs


def cell_of(wildcards: dict[str, str]) -> str:
    """The sky cell of a per-cell job (its association or product is r00001_p_full_<cell>_f158)."""
    name = wildcards.get("asn") or wildcards.get("product")
    return name.split("_")[3]


def cells_touched(workdir: Path, skymap: SkyMap, expo: str) -> set[str]:
    with rdm.open(workdir / "results" / "exposures" / f"{expo}_cal.asdf") as model:
        return set(skymap.cells_touching(model.meta.wcsinfo.s_region))


def check_only(jobs, exposures: set[str], cells: set[str]) -> None:
    """Every job is of one of ``exposures``, one of ``cells``, or campaign-wide; each cell's
    mosaic chain ran."""
    for rule, wildcards in jobs:
        if rule in PER_EXPOSURE:
            assert wildcards["expo"] in exposures, (rule, wildcards)
        elif rule in PER_CELL:
            assert cell_of(wildcards) in cells, (rule, wildcards)
        else:
            assert rule in CAMPAIGN_WIDE, (rule, wildcards)
    for rule in ("flux", "skymatch", "outlier_detection", "resample"):
        assert {cell_of(w) for r, w in jobs if r == rule} == cells, rule


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """The campaign run without its fourth exposure (held aside)."""
    out = tmp_path_factory.mktemp("incremental")
    simulate_campaign(CampaignConfig.from_mapping({
        "detectors": ["WFI01"], "filters": ["F158"], "exposures_per_filter": 4, "dithers": DITHERS,
        "size": 128, "stars": 40, "saturating_stars": 0, "seed": 13, "skymap": SKYMAP,
    }), out)
    uncal = sorted((out / "uncal").glob("*_uncal.asdf"))
    held = out / "held" / uncal[-1].name
    held.parent.mkdir()
    shutil.move(uncal[-1], held)
    result = snakemake(out)
    assert result.returncode == 0, result.stderr[-3000:]
    skymap = SkyMap.read(next((out / "references").glob("roman_wfi_skycells_*.asdf")))
    first = {path.name.removesuffix("_uncal.asdf") for path in uncal[:-1]}
    return out, held, skymap, first


@pytest.fixture(scope="module")
def added(campaign):
    out, held, skymap, first = campaign
    shutil.move(held, out / "uncal" / held.name)
    result = snakemake(out)
    assert result.returncode == 0, result.stderr[-3000:]
    new = held.name.removesuffix("_uncal.asdf")
    return out, skymap, first, new, executed_jobs(result.stdout + result.stderr)


def test_an_added_exposure_remosaics_exactly_the_cells_it_touches(added):
    out, skymap, first, new, jobs = added
    before = set().union(*(cells_touched(out, skymap, expo) for expo in first))
    touched = cells_touched(out, skymap, new)
    # the campaign is built so that the new exposure shares cells, brings one, and misses some
    assert touched - before and touched & before and before - touched
    check_only(jobs, {new}, touched)
    assert sum(rule == "cal" for rule, _ in jobs) == 1
    mosaics = {path.name for path in (out / "results" / "mosaics").glob("*_i2d.asdf")}
    assert mosaics == {f"r00001_p_full_{cell}_f158_i2d.asdf" for cell in before | touched}
    for cell in touched:
        with rdm.open(out / "results" / "mosaics" / f"r00001_p_full_{cell}_f158_i2d.asdf") as mosaic:
            assert mosaic.meta.wcsinfo.skycell_name == cell
            assert mosaic.data.shape == (SKYMAP["nxy_skycell"],) * 2
            assert any(new in str(member) for member in mosaic.meta.resample.members)
    again = snakemake(out, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_quarantined_exposure_remosaics_the_cells_it_left(added):
    out, skymap, first, removed, _ = added
    touched = cells_touched(out, skymap, removed)
    remaining = set().union(*(cells_touched(out, skymap, name) for name in first))
    assert touched & remaining and touched - remaining  # cells to redo, and one left with no member
    uncal = out / "uncal" / f"{removed}_uncal.asdf"
    uncal.write_bytes(uncal.read_bytes()[: uncal.stat().st_size // 2])  # damaged: the pool refuses it
    result = snakemake(out)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = executed_jobs(result.stdout + result.stderr)
    # its cells that other exposures still reach are redone without it; no job of any exposure runs
    check_only(jobs, set(), touched & remaining)
    assert removed in (out / "results" / "quarantine.csv").read_text()
    for cell in touched & remaining:
        with rdm.open(out / "results" / "mosaics" / f"r00001_p_full_{cell}_f158_i2d.asdf") as mosaic:
            assert not any(removed in str(m) for m in mosaic.meta.resample.members)
