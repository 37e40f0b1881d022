"""A campaign full of bad inputs: each is left out with its reason, the good ones are calibrated.

A tiny campaign (one detector, 64 x 64) of two good exposures, mixed with bad inputs of every
kind an operator meets (corrupt and truncated files, odd names, broken links, references cut,
missing, of the wrong model or lacking the exposure's filter, a flooded exposure that fails
only when calibrated, after the pool), run once with the local profile as the README says.
Each bad input must have one row in the report's quarantine table with its reason; the good
exposures their _cal and their mosaic; the run must exit non-zero (a job failed), and nothing
may run or be written outside the work directory. The same finished campaign then takes
config values built to run commands, in every string key of the schema, and must run none
of them.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from romanpipe import crds_cache
from romanpipe.products import write_atomic

import jsonschema
import numpy as np
import pandas as pd
import pytest
import roman_datamodels as rdm
import yaml
from astropy.time import Time
from roman_datamodels import datamodels

from conftest import make_level1
from test_resume import clean_env, snakemake_command
from wfisim.campaign import CampaignConfig, simulate_campaign
from wfisim.detector import build_detector
from wfisim.references import make_reference, next_reference_path

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("torture")]

SIZE, SEED = 64, 5
# The good exposures: two dithers of one detector and filter, one association.
CAMPAIGN = {"detectors": ["WFI01"], "filters": ["F158"], "exposures_per_filter": 2,
            "dithers": [[0.0, 0.0], [2.5, 1.5]], "size": SIZE, "stars": 20, "saturating_stars": 1,
            "seed": SEED}
GOOD = ["r0000101001001001001_01101_0001_WFI01", "r0000101001001001001_01101_0002_WFI01"]
# Exposures valid in themselves, copied from the first good one with a later start: each selects
# a reference delivered for its day only, damaged after delivery (or, for PHOTOM, lacking F158).
LATE = {
    "photom_without_f158": ("r0000101001001001001_01101_0011_WFI01", "2027-03-02", "photom"),
    "reference_missing": ("r0000101001001001001_01101_0012_WFI01", "2027-03-03", "mask"),
    "reference_wrong_model": ("r0000101001001001001_01101_0013_WFI01", "2027-03-04", "mask"),
    "reference_cut": ("r0000101001001001001_01101_0014_WFI01", "2027-03-05", "mask"),
}
# Whole, and its SATURATION reference sound (every pixel checked), but taken with the detector
# flooded: every pixel saturates in the first resultant, so no pixel has a slope. Only
# calibrating the exposure shows that; it fails after the pool, in source_detection. Taken
# (and its reference valid from) after the good exposures and before the days of LATE, whose
# damaged references it would otherwise select.
FLOODED, FLOODED_START, FLOODED_USEAFTER = ("r0000101001001001001_01101_0015_WFI01", "2027-03-01T12:00:00",
                                            "2027-03-01T06:00:00")
FLOODED_REASON = "source_detection failed: no science data: "
PAYLOAD = "x$(touch INJECTED)`touch INJECTED`;touch INJECTED;'y z"


def run(workdir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True,
                          env=clean_env(), timeout=1200, **kwargs)


def uncal_name(expo: str) -> str:
    return f"{expo}_uncal.asdf"


def later_copy(source: Path, target: Path, start: str, *, flooded: bool = False) -> None:
    with rdm.open(source) as model:
        later = model.copy()
    later.meta.exposure.start_time = Time(start)
    if flooded:
        later.data = np.full_like(later.data, np.iinfo(later.data.dtype).max)
    later.to_asdf(target)


def deliver(workdir: Path, reftype: str, useafter: str, edit=None) -> Path:
    """A reference of ``reftype`` valid from ``useafter`` delivered into the campaign's cache."""
    cache = workdir / "crds_cache"
    model = make_reference(reftype, build_detector("WFI01", (SIZE, SIZE), SEED), useafter=useafter)
    if edit:
        edit(model)
    path = write_atomic(model, next_reference_path(workdir / "references", reftype,
                                                   crds_cache.references_dir(cache)))
    crds_cache.deliver(cache, [path], description=f"torture test: {reftype} from {useafter}")
    return crds_cache.references_dir(cache) / path.name


def without_f158(model) -> None:
    table = dict(model.phot_table)
    del table["F158"]
    model.phot_table = table


def every_pixel_checked(model) -> None:
    """A SATURATION reference with a threshold for every pixel (none NaN or NO_SAT_CHECK)."""
    model.data = np.nan_to_num(model.data, nan=float(np.nanmedian(model.data)))
    model.dq = np.zeros_like(model.dq)


def add_flooded_exposure(workdir: Path) -> str:
    """The FLOODED exposure beside the good ones, with its SATURATION reference; its name."""
    uncal = workdir / "uncal"
    later_copy(uncal / uncal_name(GOOD[0]), uncal / uncal_name(FLOODED), FLOODED_START, flooded=True)
    deliver(workdir, "saturation", FLOODED_USEAFTER, every_pixel_checked)
    return FLOODED


def bad_inputs(workdir: Path) -> dict[str, str]:
    """Write the bad inputs beside the good ones; listed path -> the reason expected for it."""
    uncal = workdir / "uncal"
    good = uncal / uncal_name(GOOD[0])
    raw = good.read_bytes()
    blocks = [i for i in range(len(raw)) if raw.startswith(b"\xd3BLK", i)]
    expected = {}

    def damaged(number: int, content: bytes, reason: str) -> None:
        path = uncal / uncal_name(f"r0000101001001001001_01101_{number:04d}_WFI01")
        path.write_bytes(content)
        expected[str(path.relative_to(workdir))] = reason

    damaged(21, raw[: blocks[0] + 500], "truncated inside data block 0")  # the case 1
    damaged(22, raw[: blocks[-1] + 100], f"truncated inside data block {len(blocks) - 1}")
    damaged(23, raw[: blocks[0] + 99] + bytes([raw[blocks[0] + 99] ^ 0x10]) + raw[blocks[0] + 100:],
            "data block 0 does not match its checksum")
    damaged(24, os.urandom(4000), "not an ASDF file")
    damaged(25, b"", "not an ASDF file")
    damaged(26, raw[:300], "truncated inside its metadata tree")

    def level1(number: int, model, reason: str) -> None:
        detector = model.meta.instrument.detector
        path = uncal / uncal_name(f"r0000101001001001001_01101_{number:04d}_{detector}")
        model.to_asdf(path)
        expected[str(path.relative_to(workdir))] = reason

    level1(31, make_level1(shape=(3, SIZE, SIZE), read_pattern=[[1], [2, 3]]),
           "data has 3 resultants but the MA table's read_pattern has 2")
    smaller = make_level1(shape=(3, 32, 32))
    smaller.meta.exposure.start_time = Time("2027-03-01T01:00:00")
    level1(32, smaller, "(64, 64), the exposure 32 x 32 pixels")  # the case 3
    elsewhere = make_level1(shape=(3, SIZE, SIZE))
    elsewhere.meta.instrument.detector = "WFI07"
    level1(33, elsewhere, "no APCORR reference for detector=WFI07")
    image = uncal / uncal_name("r0000101001001001001_01101_0034_WFI01")
    datamodels.ImageModel.create_fake_data(shape=(8, 8)).to_asdf(image)
    expected[str(image.relative_to(workdir))] = "is a ImageModel, expected ScienceRawModel or TvacModel"
    odd_type = uncal / uncal_name("r0000101001001001001_01101_0035_WFI01")
    odd_type.write_bytes(raw.replace(b"type: WFI_IMAGE", b"type: WFI_OTHER", 1))
    expected[str(odd_type.relative_to(workdir))] = "WFI_OTHER"

    # names and paths the workflow cannot use (the case 4)
    (uncal / "r0000101001001001001_01101_0041_WFI01_uncal.asdf").symlink_to(uncal / "gone.asdf")
    expected["uncal/r0000101001001001001_01101_0041_WFI01_uncal.asdf"] = "a dangling symbolic link"
    (uncal / "r0000101001001001001_01101_0042_WFI01_uncal.asdf").mkdir()
    expected["uncal/r0000101001001001001_01101_0042_WFI01_uncal.asdf"] = "not a regular file"
    shutil.copy(good, uncal / "{expo}_uncal.asdf")
    expected["uncal/{expo}_uncal.asdf"] = "braces in the path"
    for odd in ("a;b", "a#b", "a?b", "a%20b", "a\nb", "a b"):
        shutil.copy(good, uncal / uncal_name(odd))
        shown = f"uncal/{uncal_name(odd)}".replace("\n", "\\n")
        expected[shown] = "holds characters the workflow does not pass on"
    expected["uncal/absent_uncal.asdf"] = "no such file"

    expected[f"uncal/{uncal_name(add_flooded_exposure(workdir))}"] = FLOODED_REASON
    # valid exposures whose references are not
    for case, (expo, day, reftype) in LATE.items():
        later_copy(good, uncal / uncal_name(expo), f"{day}T12:00:00")
        edit = without_f158 if case == "photom_without_f158" else None
        reference = deliver(workdir, reftype, f"{day}T00:00:00", edit)
        if case == "reference_missing":
            reference.unlink()
            reason = f"the MASK reference {reference.name} selected by"
        elif case == "reference_wrong_model":
            flat = sorted(reference.parent.glob("roman_wfi_flat_*.asdf"))[0]
            reference.write_bytes(flat.read_bytes())
            reason = f"its MASK reference {reference.name}: is a FlatRefModel, expected MaskRefModel"
        elif case == "reference_cut":
            reference.write_bytes(reference.read_bytes()[: reference.stat().st_size // 2])
            reason = f"its MASK reference {reference.name}: truncated"
        else:
            reason = (f"its PHOTOM reference {reference.name}: PHOTOM table has no row for "
                      "optical element F158")
        expected[f"uncal/{uncal_name(expo)}"] = reason
    return expected


@pytest.fixture(scope="module")
def tortured(tmp_path_factory):
    """(work directory, run result, expected reasons, files outside before the run)."""
    root = tmp_path_factory.mktemp("torture").resolve()
    workdir = root / "campaign"
    simulate_campaign(CampaignConfig.from_mapping(CAMPAIGN), workdir)
    expected = bad_inputs(workdir)
    listed = [str(p.relative_to(workdir)) for p in sorted((workdir / "uncal").iterdir())]
    listed += ["uncal/absent_uncal.asdf", f"uncal/{uncal_name(GOOD[0])}"]  # a missing file, a duplicate
    expected[f"uncal/{uncal_name(GOOD[0])}#duplicate"] = "the same exposure name as"
    pd.DataFrame({"path": listed}).to_csv(workdir / "exposures.csv", index=False)
    settings = yaml.safe_load((workdir / "workflow.yaml").read_text())
    settings["inputs"]["exposure_list"] = "exposures.csv"
    settings["associations"] = {"grouping": "overlap"}  # the good exposures make one mosaic
    (workdir / "workflow.yaml").write_text(yaml.safe_dump(settings))
    outside = sorted(str(p) for p in root.rglob("*") if workdir not in p.parents and p != workdir)
    result = run(workdir)
    return workdir, result, expected, outside


def test_every_bad_input_has_one_quarantine_row_with_its_reason(tortured):
    workdir, result, expected, _ = tortured
    table = pd.read_csv(workdir / "results" / "quarantine_report.csv", dtype=str, keep_default_na=False)
    assert len(expected) >= 15 + 5  # kinds of bad input, the odd names counted once
    assert len(table) == len(expected), table.to_string()
    for listed, reason in expected.items():
        path = listed.removesuffix("#duplicate")
        rows = table[(table["path"] == path) & table["reason"].str.contains(reason, regex=False)]
        assert len(rows) == 1, (listed, reason, table[table["path"] == path].to_dict("records"))
        assert "\n" not in rows.iloc[0]["reason"]
    failed = table[table["stage"] != "pool"]
    assert failed[["exposure", "stage"]].values.tolist() == [[FLOODED, "source_detection"]]


def test_the_good_exposures_are_calibrated_and_mosaicked_and_the_run_fails(tortured):
    workdir, result, _, _ = tortured
    assert result.returncode != 0  # the exposure that failed after the pool
    assert "1 exposure(s) failed after the pool" in result.stderr
    exposures = workdir / "results" / "exposures"
    for expo in GOOD:
        with rdm.open(exposures / f"{expo}_cal.asdf") as model:
            assert model.meta.cal_step.photom == "COMPLETE"
    index = pd.read_csv(workdir / "results" / "associations.csv")
    assert len(index) == 1
    members = yaml.safe_load(index.loc[0, "tree"])["products"][0]["members"]
    assert sorted(Path(m["expname"]).name for m in members) == [f"{expo}_cal.asdf" for expo in GOOD]
    with rdm.open(workdir / "results" / "mosaics" / f"{index.loc[0, 'product']}_i2d.asdf") as mosaic:
        assert isinstance(mosaic, datamodels.MosaicModel)
    log = (workdir / "logs" / "associations.log").read_text()
    assert f"left out {FLOODED}: it did not reach _cal" in log


def test_nothing_is_left_behind_or_written_outside(tortured):
    workdir, _, _, outside = tortured
    root = workdir.parent
    assert sorted(str(p) for p in root.rglob("*") if workdir not in p.parents and p != workdir) == outside
    results = workdir / "results"
    assert not [p for p in results.rglob("*.staging")]
    # no temporary ramp survives, the failed exposure's included
    ramps = ("_dqinit", "_saturation", "_refpix", "_linearity", "_darkcurrent", "_jump")
    assert not [p.name for p in (results / "exposures").iterdir() if p.stem.endswith(ramps)]


def test_a_moved_campaign_has_nothing_to_redo(tortured, tmp_path):
    workdir, _, _, _ = tortured
    moved = tmp_path / "moved campaign"
    shutil.copytree(workdir, moved, symlinks=True)
    result = run(moved, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def string_keys(schema: dict, prefix=()) -> list[tuple[tuple[str, ...], dict]]:
    found = []
    for name, prop in schema.get("properties", {}).items():
        if "properties" in prop:
            found += string_keys(prop, (*prefix, name))
            continue
        types = prop.get("type", "string")
        if "string" in (types if isinstance(types, list) else [types]):
            found.append(((*prefix, name), prop))
    return found


def nested(keys: tuple[str, ...], value) -> dict:
    return {keys[0]: nested(keys[1:], value)} if len(keys) > 1 else {keys[0]: value}


def merge(into: dict, other: dict) -> dict:
    for key, value in other.items():
        into[key] = merge(into.get(key, {}), value) if isinstance(value, dict) else value
    return into


def test_config_values_built_to_run_commands_run_none(tortured, tmp_path):
    """Every string key of the schema gets $(...), backticks, ';' and a quote: the pool runs for
    real with them, every other job's shell line is printed by a dry run and run by bash with the
    scripts replaced by `true`. No INJECTED file may appear."""
    workdir, _, _, _ = tortured
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, symlinks=True)
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keys = string_keys(schema)
    free = [(k, p) for k, p in keys if "enum" not in p and "pattern" not in p]
    refused = [(k, p) for k, p in keys if (k, p) not in free]
    assert len(free) >= 30 and refused  # every string key is either free text or refused below
    # paths the workflow needs to exist: made under the payload's name, inside the copy
    references = copy / "crds_cache" / "references" / "roman" / "wfi"
    settings = {}
    for key, _ in free:
        value = f"{key[-1]}-{PAYLOAD}"
        if key[-1].startswith("override_"):
            source = sorted(references.glob(f"roman_wfi_{key[-1].removeprefix('override_')}_*.asdf"))
            if source:
                shutil.copy(source[0], copy / value)
        elif key[-1] in ("abs_refcat", "catfile"):
            shutil.copy(copy / "catalogs" / "gaia_like.ecsv", copy / value)
        elif key == ("parameter_file",):
            (copy / value).write_text("steps: []\n")
        elif key == ("inputs", "exposure_list"):
            (copy / "exposures.csv").rename(copy / value)
        elif key == ("inputs", "uncal_dir") or key == ("associations", "user_dir"):
            (copy / value).mkdir()
        elif key == ("crds", "path"):
            (copy / "crds_cache").rename(copy / value)
            references = copy / value / "references" / "roman" / "wfi"
        elif key == ("inputs", "cal_list"):
            cal_list = value  # a run of the Level 3 stage alone: its own dry run, below
            continue
        merge(settings, nested(key, value))
    del settings["groundtest"]  # only with dark exposures, which this campaign has none of
    (copy / "injected.yaml").write_text(yaml.safe_dump(settings))
    configs = ["--configfile", str(copy / "workflow.yaml"), str(copy / "injected.yaml")]
    # a target before --configfile, which takes every word after it (README)
    pool = subprocess.run([sys.executable, "-m", "snakemake", f"{settings['results_dir']}/pool.csv",
                           *snakemake_command(copy, *configs)[3:]], capture_output=True, text=True,
                          env=clean_env(), timeout=1200)
    assert pool.returncode == 0, pool.stderr[-3000:]
    assert len(run_printed_commands_harmlessly(copy, configs)) >= 10
    # The Level 3 stage alone over the campaign's _cal products, listed in a file named by the payload.
    cal_products = sorted(workdir.glob("results/exposures/*_cal.asdf"))
    assert cal_products
    pd.DataFrame({"path": [str(path) for path in cal_products]}).to_csv(copy / cal_list, index=False)
    merge(settings, nested(("inputs", "cal_list"), cal_list))
    (copy / "level3.yaml").write_text(yaml.safe_dump(settings))
    assert run_printed_commands_harmlessly(copy, ["--configfile", str(copy / "workflow.yaml"),
                                                  str(copy / "level3.yaml")])
    validator = jsonschema.validators.validator_for(schema)(schema)
    for key, _ in refused:  # an enum or a pattern: the schema (Snakemake validates) refuses the payload
        errors = validator.iter_errors(nested(key, PAYLOAD))
        assert any(tuple(error.absolute_path) == key for error in errors), key
    assert not list(tmp_path.rglob("INJECTED")) and not list(workdir.parent.rglob("INJECTED"))


def run_printed_commands_harmlessly(folder, configs) -> list[str]:
    """The shell lines a dry run prints, each run by bash with the interpreter replaced by `true`."""
    dry = run(folder, *configs, "-n", "-p")
    assert dry.returncode == 0, dry.stderr[-3000:]
    commands = [line.removeprefix("Shell command: ") for line in dry.stdout.splitlines()
                if line.startswith("Shell command: ")]
    for command in commands:
        harmless = command.replace(sys.executable, "true", 1)
        subprocess.run(["bash", "-c", harmless], cwd=folder, capture_output=True, timeout=60)
    return commands


@pytest.mark.parametrize(("setting", "message"), [
    ("parameter_file: missing.yaml\n", "parameter_file: 'missing.yaml': no such file"),
    ("results_dir: ../elsewhere\n", "results_dir: '../elsewhere' leaves the working directory"),
    ("a0: &a0 [1, 1]\na1: &a1 [*a0, *a0]\n", "the workflow config: a mapping or list used twice"),
    # (the tortured campaign groups by overlap: this setting asks for sky cells, as a group's does)
    ("level3: {cells: [270p65x48y69]}\nassociations: {grouping: skycell}\n",
     "level3.cells needs level3.group"),
    ("level3: {cells: ['*'], group: g}\nassociations: {grouping: overlap}\n",
     "level3.cells selects sky cells: it needs associations.grouping: skycell"),
])
def test_settings_refused_in_one_line(tortured, tmp_path, setting, message):
    workdir, _, _, _ = tortured
    (tmp_path / "setting.yaml").write_text(setting)
    result = run(workdir, "--configfile", str(workdir / "workflow.yaml"), str(tmp_path / "setting.yaml"),
                 "-n")
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
