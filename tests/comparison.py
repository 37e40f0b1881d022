"""Running one campaign twice and comparing the products: arrays bit for bit, metadata apart
from what names the run.

Shared by the tests that run the same campaign two ways (SLURM and local, interrupted and
not, the workflow and the Python API) and require the same products.
"""

import re
import shutil
from pathlib import Path

import asdf
import gwcs
import numpy as np
import pandas
import roman_datamodels as rdm
from astropy.table import Table

# Metadata that legitimately differs between two runs of the same code on the same inputs:
# when the file was written (a catalog's or segmentation map's copy of its image's meta too,
# or of each filter's mosaic's meta in a multiband segmentation map) and, in a step's
# provenance, when, where and how long it ran.
# (Absolute paths contain the run's folder: they are compared with that folder replaced.)
VOLATILE = re.compile(
    r"^roman\.meta\.(file_date|image\.file_date|image_metas\.\d+\.file_date"
    r"|provenance\.[^.]+\.(date|start\w*|end\w*|finish\w*|duration\w*|elapsed\w*|wall\w*|cpu\w*"
    r"|host\w*|node\w*|pid|user|slurm\w*))$"
)


# Tables of how a run went (its jobs' timings), not of what it made.
RUN_RECORDS = {"benchmarks.csv"}


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


def in_memory_differences(model, path: Path) -> list[str]:
    """What differs between a model in memory (the Python API's) and the product at ``path``:
    as :func:`model_differences`, but for the file's name, which only a written product has."""
    with rdm.open(path) as written:
        flat = [{key: value for key, value in tree.to_flat_dict().items() if key != "roman.meta.filename"}
                for tree in (model, written)]
        return flat_differences(*flat, path, path)


def flat_differences(flat_a: dict, flat_b: dict, path_a: Path, path_b: Path) -> list[str]:
    problems = []
    keys_a = {k for k in flat_a if not VOLATILE.match(k)}
    keys_b = {k for k in flat_b if not VOLATILE.match(k)}
    if keys_a != keys_b:
        problems.append(f"{path_a.name}: keys only on one side: {sorted(keys_a ^ keys_b)}")
    root_a, root_b = path_a.parents[2], path_b.parents[2]  # the two runs' working folders
    for key in sorted(keys_a & keys_b):
        a, b = flat_a[key], flat_b[key]
        if isinstance(a, Table) and isinstance(b, Table):
            # a mosaic's table of its members' metadata: their file dates are as volatile as its own
            a, b = (table.copy() for table in (a, b))
            for table in (a, b):
                table.remove_columns([name for name in table.colnames if name == "file_date"])
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
        elif relative.suffix == ".png":
            if (run_a / relative).read_bytes() != (run_b / relative).read_bytes():
                problems.append(f"{relative} differs")
        elif relative.name in RUN_RECORDS:
            continue
        elif relative.suffix == ".parquet":  # catalogs: the rows (the metadata has the file's date)
            if not pandas.read_parquet(run_a / relative).equals(pandas.read_parquet(run_b / relative)):
                problems.append(f"{relative} differs")
        else:  # tables: absolute reference paths name the run's folder
            text_a = normalized((run_a / relative).read_text(), run_a)
            text_b = normalized((run_b / relative).read_text(), run_b)
            if text_a != text_b:
                problems.append(f"{relative} differs")
    return problems


def fresh_copy(campaign: Path, tmp_path_factory, name: str) -> Path:
    """A copy of the simulated inputs to run in (the original is never run in)."""
    workdir = tmp_path_factory.mktemp(name).resolve() / "campaign"
    shutil.copytree(campaign, workdir)
    return workdir
