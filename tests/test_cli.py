"""A step script run as a program: exit status, logs flushed, product in place (cli.run_and_exit)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import roman_datamodels as rdm

from conftest import EXPO
from test_photom import image_file, photom_reference

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPTS / "photom.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_success_leaves_the_product_and_every_log_line(tmp_path):
    reference = photom_reference(tmp_path / "roman_wfi_photom_0001.asdf")
    source = image_file(tmp_path / f"{EXPO}_flat.asdf")
    output = tmp_path / f"{EXPO}_photom.asdf"
    result = run_script(source, output, "--override-photom", reference)
    assert result.returncode == 0, result.stderr
    # The last lines, logged just before the process ends, are not lost.
    assert f"wrote {output}" in result.stderr and "romanpipe-timing" in result.stderr.splitlines()[-1]
    with rdm.open(output) as product, rdm.open(source) as before:
        assert product.meta.cal_step.photom == "COMPLETE"
        np.testing.assert_array_equal(product.data, before.data)


def test_failure_exits_non_zero_with_one_line_and_no_product(tmp_path):
    output = tmp_path / f"{EXPO}_photom.asdf"
    result = run_script(tmp_path / "missing_flat.asdf", output)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "missing_flat.asdf" in errors[0]
    assert not output.exists() and not list(tmp_path.iterdir())


def test_a_utility_reports_a_missing_folder_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPTS / "list_products.py"), str(tmp_path / "absent")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().endswith(f"{tmp_path / 'absent'}: no such folder")
    assert len(result.stderr.strip().splitlines()) == 1
