"""File names: the exposure naming scheme and the one registry of product suffixes.

A product is ``<base>_<suffix>.asdf``. Following the romancal documentation, section "Individual Step
Outputs", a known suffix at the end of an input name is replaced and an unknown
one is kept (the new suffix is appended). Names are parsed against the known
suffixes, never by splitting on the last underscore: exposure names and some
suffixes (``outlier_detection``) contain underscores themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

# romancal step name -> suffix of the product the step writes, in pipeline order (romancal's own
# suffixes; dark_decay and wfi18_transient keep their underscore, as romancal 1.1 writes them).
STEP_SUFFIX: dict[str, str] = {
    "dq_init": "dqinit",
    "saturation": "saturation",
    "refpix": "refpix",
    "dark_decay": "dark_decay",
    "wfi18_transient": "wfi18_transient",
    "linearity": "linearity",
    "dark_current": "darkcurrent",
    "jump": "jump",
    "ramp_fit": "rampfit",
    "assign_wcs": "assignwcs",
    "flat_field": "flat",
    "photom": "photom",
    "source_detection": "sourcedetection",
    "tweakreg": "tweakreg",
    "flux": "flux",
    "skymatch": "skymatch",
    "outlier_detection": "outlier_detection",
    "resample": "resample",
    "source_catalog": "cat",
}

# Products that only the next step of the chain reads, moments later on the same file system:
# every step's product except resample's mosaic. Delivered products (_cal, _i2d) and Level 1
# inputs are not among them.
INTERMEDIATE_SUFFIXES: frozenset[str] = frozenset(STEP_SUFFIX.values()) - {STEP_SUFFIX["resample"],
                                                                          STEP_SUFFIX["source_catalog"]}

# Suffixes that are not a step's own output, and the spellings romancal also uses.
OTHER_SUFFIXES = (
    "uncal", "ramp", "fitopt", "cal", "i2d", "median", "blot", "outlier_i2d", "asn",
    "dq_init", "dark_current", "ramp_fit", "assign_wcs", "flat_field",
    "source_detection", "sourcedetectionstep", "tweakregstep", "resamplestep",
    "outlier_detection_step", "segm",
)

KNOWN_SUFFIXES: frozenset[str] = frozenset(STEP_SUFFIX.values()) | frozenset(OTHER_SUFFIXES)

# Longest first so that "outlier_i2d" wins over "i2d".
_SUFFIX_RE = re.compile(
    r"^(?P<base>.+?)_(?P<suffix>"
    + "|".join(sorted(map(re.escape, KNOWN_SUFFIXES), key=len, reverse=True))
    + r")$"
)

EXPOSURE_NAME_RE = re.compile(
    r"^r(?P<program>\d{5})(?P<execution_plan>\d{2})(?P<pass>\d{3})(?P<segment>\d{3})"
    r"(?P<observation>\d{3})(?P<visit>\d{3})_(?P<visit_file_group>\d{2})"
    r"(?P<visit_file_sequence>\d)(?P<visit_file_activity>[0-9a-z]{2})_"
    r"(?P<exposure>\d{4})_(?P<detector>WFI\d{2})$",
    re.IGNORECASE,
)


def split_suffix(name: str | Path) -> tuple[str, str | None]:
    """Split a file name (any directory and extension dropped) into base and known suffix."""
    stem = Path(name).name
    if stem.endswith(".asdf"):
        stem = stem[: -len(".asdf")]
    match = _SUFFIX_RE.match(stem)
    if match:
        return match["base"], match["suffix"]
    return stem, None


def product_name(input_name: str | Path, suffix: str, output_dir: str | Path | None = None) -> Path:
    """Name of the product with ``suffix`` made from ``input_name`` (the documented naming rule)."""
    base, _ = split_suffix(input_name)
    directory = Path(output_dir) if output_dir is not None else Path(input_name).parent
    return directory / f"{base}_{suffix}.asdf"


def exposure_name(
    *, program: int, execution_plan: int, pass_: int, segment: int, observation: int,
    visit: int, visit_file_group: int, visit_file_sequence: int, visit_file_activity: str,
    exposure: int, detector: str,
) -> str:
    """``r<ppppp><cc><aaa><sss><ooo><vvv>_<gg><s><aa>_<eeee>_<detector>`` (no suffix)."""
    return (
        f"r{program:05d}{execution_plan:02d}{pass_:03d}{segment:03d}{observation:03d}"
        f"{visit:03d}_{visit_file_group:02d}{visit_file_sequence:1d}"
        f"{visit_file_activity:>02}_{exposure:04d}_{detector.upper()}"
    )


def parse_exposure_name(name: str | Path) -> dict[str, str]:
    """Fields of a Roman exposure name (with or without suffix); ValueError if it is not one."""
    base, _ = split_suffix(name)
    match = EXPOSURE_NAME_RE.match(base)
    if not match:
        raise ValueError(f"{Path(name).name}: not a Roman exposure name "
                         "r<ppppp><cc><aaa><sss><ooo><vvv>_<gg><s><aa>_<eeee>_<detector>")
    return match.groupdict()
