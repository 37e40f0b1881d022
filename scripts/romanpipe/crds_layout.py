"""Where a local CRDS cache keeps its files, and which context it calls operational.

What the workflow reads at every Snakemake start (on SLURM, once per rule), so it imports
neither crds nor roman_datamodels (about 1.7 s together); :mod:`romanpipe.crds_cache`
builds the cache in this layout.
"""

import ast
from pathlib import Path

OBSERVATORY = "roman"
INSTRUMENT = "wfi"


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
