"""Reading and writing Roman products with roman_datamodels.

Every file we write is a roman_datamodels model, validated on write, that
``roman_datamodels.open`` reads back. A product appears under its final name only
when it is complete: it is written to a hidden temporary name in the same folder
and renamed.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import warnings
from functools import cache
from pathlib import Path

import asdf
import numpy as np
import roman_datamodels as rdm
from astropy.time import Time
from roman_datamodels import datamodels

from .errors import InputFileError, NoScienceDataError
from .files import staging_folder
from .naming import INTERMEDIATE_SUFFIXES, split_suffix

log = logging.getLogger(__name__)

LEVEL1_MODELS = (datamodels.ScienceRawModel, datamodels.TvacModel)

# meta.cal_step values (the romancal documentation, section "Tracking Pipeline Progress").
COMPLETE, SKIPPED, INCOMPLETE = "COMPLETE", "SKIPPED", "INCOMPLETE"


# float16's smallest normal number; below it numpy's cast to float16 runs ~20x slower.
_FLOAT16_TINY = np.float32(2.0**-14)
_FLOAT16_SUBNORMAL_STEP = np.float32(2.0**-24)


def as_float16(values: np.ndarray) -> np.ndarray:
    """float16 copy of a float32 array, bit-identical to ``values.astype(np.float16)``.

    The Level 2 schemas store errors and variances as float16. numpy converts results in
    float16's subnormal range (|x| < 2**-14, common for variances in (DN/s)^2) through a
    slow path: 1.2 s for a 4088^2 plane instead of 0.05 s. Those are multiples of 2**-24,
    so their bits are the rounded multiple (half to even, as IEEE conversion rounds).
    """
    values = np.asarray(values)
    if values.dtype != np.float32:
        raise TypeError(f"as_float16 takes float32 values, not {values.dtype}")
    tiny = np.abs(values) < _FLOAT16_TINY
    converted = np.where(tiny, np.float32(0.0), values).astype(np.float16)
    if tiny.any():
        small = values[tiny]
        multiples = np.rint(np.abs(small) / _FLOAT16_SUBNORMAL_STEP).astype(np.uint16)
        converted.view(np.uint16)[tiny] = multiples | (np.signbit(small).astype(np.uint16) << 15)
    return converted


def open_model(path: str | Path, expected: tuple[type, ...] | None = None, *, memmap: bool = True):
    """Open a Roman product, turning every failure into one line naming the file.

    ``memmap`` keeps large arrays on disk until they are touched, so a step reads
    a ramp once instead of holding the file's bytes and a converted copy.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such file")
    try:
        with warnings.catch_warnings():
            # asdf warns about unknown tags of other software versions; a bad
            # file fails below anyway, with a clearer message.
            warnings.simplefilter("ignore")
            model = rdm.open(_asdf_source(path), memmap=memmap)
    except Exception as err:  # asdf/yaml/validation raise many types
        # roman_datamodels re-raises asdf's precise error as a vague TypeError.
        cause = err.__context__ if isinstance(err, TypeError) and err.__context__ else err
        raise InputFileError(path, f"not a readable Roman ASDF file ({type(cause).__name__}: "
                                   f"{_first_line(cause)})") from None
    if expected and not isinstance(model, expected):
        model.close()
        names = " or ".join(t.__name__ for t in expected)
        raise InputFileError(path, f"is a {type(model).__name__}, expected {names}")
    return model


# asdf reads a path as a URL: these characters would cut it short or change it.
_URL_CHARACTERS = frozenset(";#?%")


def _asdf_source(path: Path) -> Path | str:
    """``path``, or its file URL (characters escaped) when asdf would misread it as a path."""
    return path.resolve().as_uri() if _URL_CHARACTERS & set(str(path)) else path


def open_level1(path: str | Path):
    """Open a Level 1 exposure: a ScienceRawModel or a ground-test TvacModel."""
    model = open_model(path, LEVEL1_MODELS)
    check_level1(model, path)
    return model


def check_level1(model, name: str | Path) -> None:
    """A Level 1 model's data must be a non-empty ramp; ``name`` names it in the error."""
    data = plain_array(model.data)
    if data.ndim != 3:
        raise InputFileError(name, f"data has shape {data.shape}, expected (nresultants, nrows, ncols)")
    if 0 in data.shape:
        raise NoScienceDataError(f"{name}: data has shape {data.shape}: no resultants or no pixels")


def plain_array(array) -> np.ndarray:
    """The ndarray behind a value; ground-test models still carry astropy Quantities."""
    return np.asarray(getattr(array, "value", array))


def exposure_group(model, fallback: str) -> str:
    """The exposure an image belongs to: every detector of one exposure shares it.

    As romancal 1.1's ModelLibrary groups its models (tweakreg aligns a group as one,
    outlier detection drizzles it into one grouped mosaic): ``meta.group_id`` when set,
    else ``meta.observation.observation_id`` (rad's placeholder ``?`` is no id), else
    ``fallback``, which makes the image its own group.
    """
    group_id = model.meta.get("group_id")
    if group_id:
        return str(group_id)
    observation = model.meta.get("observation", {})
    observation_id = observation.get("observation_id") if hasattr(observation, "get") else None
    if observation_id not in (None, "", "?"):
        return str(observation_id)
    return fallback


def derived_model(model_class, source, image_name: str):
    """A new ``model_class`` (a catalog, a segmentation map) carrying the metadata its schema
    shares with ``source`` (copied), and ``meta.image`` naming the image it describes."""
    template = model_class.create_fake_data()
    meta = {key: copy.deepcopy(source.meta[key]) for key in template.meta
            if key in source.meta and key not in ("model_type", "filename")}
    product = model_class.create_minimal({"meta": meta})
    product.meta["image"] = {"filename": image_name, "file_date": copy.deepcopy(source.meta.file_date)}
    return product


def write_atomic(model, path: str | Path) -> Path:
    """Validate and write ``model`` so that ``path`` only ever holds a complete product.

    Arrays are stored uncompressed (roman_datamodels defaults to lz4): lz4 barely
    shrinks float data, and an uncompressed file lets the next step memory-map
    its input instead of decompressing a full copy, and spares the writer a
    compressed copy of every array. They are all stored in binary blocks: asdf
    writes small arrays inline in the YAML by default, and cannot read a small
    structured array (a catalog of a few sources) back from there.

    Every block carries asdf's MD5 checksum except in an intermediate product
    (:func:`carries_checksums`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # type(): ground-test (TvacModel) metadata holds tagged strings, which a plain str fails.
    model.meta.filename = type(model.meta.filename)(path.name) if "filename" in model.meta else path.name
    # The file keeps its final name inside a private folder (the name is also
    # recorded in meta.filename), then moves into place in one rename.
    staging = staging_folder(path)
    try:
        write_roman_file(model, staging / path.name, checksums=carries_checksums(path))
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s", path)
    return path


def carries_checksums(path: str | Path) -> bool:
    """Whether a product's blocks carry checksums: all but the intermediates of the chain.

    A checksum is worth its cost (half of the write: MD5 of every byte, 1.6 s of 3.1 s
    for a 6-resultant ramp) where a file travels or is kept: Level 1 inputs, references,
    ``_cal`` and ``_i2d`` products. An intermediate (``_dqinit`` ... ``_tweakreg``, and the
    mosaic chain's members) is read once by the next job on the same file system; asdf
    does not check checksums on read unless asked, and the atomic rename already
    guarantees that a product under its final name is complete.
    """
    return split_suffix(path)[1] not in INTERMEDIATE_SUFFIXES


def write_roman_file(model, path: Path, *, checksums: bool) -> None:
    """What ``DataModel.to_asdf`` writes (``meta.file_date`` stamped now, the model's node
    under ``roman``, validated), with or without block checksums: ``to_asdf`` hands its
    keywords both to ``asdf.AsdfFile()``, which refuses ``write_checksums``, and to
    ``write_to``, so it cannot be asked to leave them out."""
    if "file_date" in model.meta:
        model.meta.file_date = type(model.meta.file_date)(Time.now())
    asdf_file = asdf.AsdfFile()
    asdf_file["roman"] = model._instance  # the node to_asdf stores; roman_datamodels has no public getter
    asdf_file.write_to(path, all_array_compression=None, all_array_storage="internal",
                       write_checksums=checksums)


@cache
def level2_cal_steps() -> tuple[str, ...]:
    """The cal_step entries the Level 2 schema requires (read from the schema, not listed here)."""
    return tuple(datamodels.RampModel.create_fake_data(shape=(1, 1, 1)).meta.cal_step.keys())


# Where the schema's cal_step key differs from the step's name.
CAL_STEP_KEY = {"dark_current": "dark", "source_detection": "source_catalog"}


def set_cal_step(model, step: str, status: str) -> None:
    """Record a step's status; creates the full cal_step record on first use."""
    if "cal_step" not in model.meta:
        model.meta.cal_step = dict.fromkeys(level2_cal_steps(), INCOMPLETE)
    model.meta.cal_step[CAL_STEP_KEY.get(step, step)] = status


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else "no detail"
