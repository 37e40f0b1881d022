"""Where a local CRDS cache keeps its files, and which context it calls operational.

What the workflow reads at every Snakemake start (on SLURM, once per rule), so it imports
neither crds nor roman_datamodels (about 1.7 s together); :mod:`romanpipe.crds_cache`
builds the cache in this layout.
"""

import ast
import re
from pathlib import Path

OBSERVATORY = "roman"
INSTRUMENT = "wfi"


# A CRDS reference file name: roman_wfi_<reftype>_<NNNN>.asdf (the romancal documentation,
# section "Reference File Naming Convention"). Files are immutable: a new file, a new serial.
REFERENCE_NAME = re.compile(rf"^{OBSERVATORY}_{INSTRUMENT}_(?P<reftype>[a-z0-9]+)_(?P<serial>\d{{4}})\.asdf$")


def next_reference_name(reftype: str, *folders, taken=()) -> str:
    """``roman_wfi_<reftype>_<NNNN>.asdf`` one serial past any of that reftype in ``folders``
    (those that exist) or among the names ``taken``."""
    reftype = reftype.lower()
    names = [*taken, *(path.name for folder in folders if Path(folder).is_dir()
                       for path in Path(folder).iterdir())]
    serials = [int(match["serial"]) for name in names
               if (match := REFERENCE_NAME.match(name)) and match["reftype"] == reftype]
    return f"{OBSERVATORY}_{INSTRUMENT}_{reftype}_{max(serials, default=0) + 1:04d}.asdf"


def mappings_dir(cache_dir) -> Path:
    return Path(cache_dir) / "mappings" / OBSERVATORY


def references_dir(cache_dir) -> Path:
    return Path(cache_dir) / "references" / OBSERVATORY / INSTRUMENT


def config_dir(cache_dir) -> Path:
    return Path(cache_dir) / "config" / OBSERVATORY


def current_context(cache_dir) -> str | None:
    """Name of the operational pmap of the cache, None for a cache not built yet."""
    server_config = config_dir(cache_dir) / "server_config"
    if not server_config.exists():
        return None
    return ast.literal_eval(server_config.read_text())["operational_context"]
