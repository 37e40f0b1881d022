"""Reference file selection through CRDS: offline from a local cache, or from a CRDS server.

The mode is decided by :func:`configure_crds` from the environment:

``CRDS_SERVER_URL``
    Set: selection follows that server (e.g. the Roman CRDS); crds caches the mappings
    and references it downloads under ``CRDS_PATH`` (``CRDS_MODE`` defaults to
    ``auto``). Unset: offline, ``CRDS_MODE=local`` on the cache at ``CRDS_PATH``, which
    :mod:`romanpipe.crds_cache` builds; crds is pointed at its serverless sentinel, so
    it never opens a connection and cannot hang on an unreachable host.
``CRDS_PATH``
    The CRDS cache directory; wins over the ``cache_dir`` argument.
``CRDS_CONTEXT``
    Pins the context (a ``roman_NNNN.pmap`` name, or a crds symbolic name) instead of
    the operational one.
"""

import importlib
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from romanpipe import crds_layout
from romanpipe.errors import InputFileError, PipelineError
from romanpipe.pool_table import SELECTION_COLUMNS

log = logging.getLogger(__name__)

# crds' own "no server" URL: its JSON-RPC proxy refuses every call to it without networking.
_SERVERLESS_URL = "https://crds-serverless-mode.stsci.edu"
_CRDS_PREFIX = "ROMAN.META."
_SELECTION_METADATA = ("instrument.name", *SELECTION_COLUMNS.values())


class ReferenceNotFoundError(PipelineError, LookupError):
    """CRDS has no reference of the requested type for the given keyword values."""


@dataclass(frozen=True)
class CrdsSettings:
    """Where references come from: a CRDS server (``server_url``) or only the local cache."""

    cache_dir: Path | None
    server_url: str | None


_settings: CrdsSettings | None = None
# The settings crds was last pointed at: crds is imported on first use (see _crds).
_crds_configured_for: CrdsSettings | None = None


def configure_crds(cache_dir=None) -> CrdsSettings:
    """Configure crds for this process from the environment (see the module docstring).

    Selection calls it on first use; call it again only after changing the environment.
    """
    global _settings
    server_url = os.environ.get("CRDS_SERVER_URL") or None
    cache = os.environ.get("CRDS_PATH") or cache_dir
    os.environ["CRDS_MODE"] = os.environ.get("CRDS_MODE", "auto") if server_url else "local"
    if cache is not None:
        cache = Path(cache).resolve()
        os.environ["CRDS_PATH"] = str(cache)
    settings = CrdsSettings(cache_dir=cache, server_url=server_url)
    if settings != _settings:
        log.info("CRDS: %s, cache %s", server_url or "offline", cache)
    _settings = settings
    if "crds" in sys.modules:
        _crds()
    return settings


def _crds(module: str = "crds"):
    """``module`` of crds, with crds pointed at the configured server (or none).

    crds is imported here, on first use, not with this module: the workflow reads the
    cache's context at every Snakemake start (on SLURM once per rule) and importing crds
    takes about a second.
    """
    global _crds_configured_for
    settings = _settings or configure_crds()
    if settings != _crds_configured_for:
        from crds.client import api
        from crds.core import utils

        api.set_crds_server(settings.server_url or _SERVERLESS_URL)
        # crds memoises mappings by file name and its server configuration per
        # process: after a switch those memos would describe the previous cache.
        utils.clear_function_caches()
        _crds_configured_for = settings
    return importlib.import_module(module)


def current_context() -> str | None:
    """Name of the pmap that selections use when given no context.

    None when offline without a built cache: then no reference can be selected.
    """
    settings = _settings or configure_crds()
    pinned = os.environ.get("CRDS_CONTEXT")
    if pinned:
        return _crds("crds.core.heavy_client").translate_date_based_context(pinned, crds_layout.OBSERVATORY)
    if settings.server_url:
        return _crds().get_context_name(crds_layout.OBSERVATORY)
    if settings.cache_dir is None:
        return None
    # Read from the cache each time: a delivery in this process makes a new context.
    return crds_layout.current_context(settings.cache_dir)


def selection_parameters(meta) -> dict[str, str]:
    """CRDS matching parameters (``ROMAN.META.…``) of an exposure.

    `meta` is a roman_datamodels ``meta`` node, or a row of the exposure pool table
    (a mapping with ``detector``, ``optical_element``, ``start_time``, ``exposure_type``).
    Missing values are left out; a reference type that needs one then finds no match.
    """
    if "detector" in meta:
        values = {path: meta[column] for column, path in SELECTION_COLUMNS.items() if column in meta}
        values["instrument.name"] = crds_layout.INSTRUMENT.upper()
    else:
        values = {path: _metadata_value(meta, path) for path in _SELECTION_METADATA}
    parameters = {}
    for path, value in values.items():
        if _is_missing(value):
            continue
        if path == "exposure.start_time":
            # USEAFTER matching takes crds' date form, as crds writes it for ASDF metadata.
            from astropy.time import Time

            value = _crds("crds.core.timestamp").reformat_date(Time(value), sep="T")
        parameters[_CRDS_PREFIX + path.upper()] = str(value)
    return parameters


def best_references(parameters, reftypes, *, context=None) -> dict[str, str]:
    """Absolute local paths of the best references of `reftypes` for `parameters`.

    Keys are the reftypes in lower case. With a server, missing files are downloaded
    into the cache. Raises :class:`ReferenceNotFoundError` when a type has no match.
    """
    settings = _settings or configure_crds()
    reftypes = [reftype.lower() for reftype in reftypes]
    context = context or current_context()
    if context is None:
        where = f"cache {settings.cache_dir}" if settings.cache_dir else "offline without a cache"
        raise ReferenceNotFoundError(
            f"no {', '.join(reftypes).upper()} reference: no CRDS context ({where}; set "
            "CRDS_PATH to a cache built with scripts/crds_deliver.py)"
        )
    parameters = dict(parameters)
    recommended = _crds().getrecommendations(
        parameters, reftypes=reftypes, context=context, observatory=crds_layout.OBSERVATORY
    )
    for reftype in reftypes:
        choice = recommended.get(reftype, "NOT FOUND: omitted by the context")
        if choice.startswith("NOT FOUND"):
            reason = choice.removeprefix("NOT FOUND").strip(" :")
            raise ReferenceNotFoundError(
                f"no {reftype.upper()} reference for {_describe(parameters, context, reftype)}: "
                f"{reason} (context {context})"
            )
    best = {reftype: recommended[reftype] for reftype in reftypes}
    if not settings.server_url:
        # Offline, crds would try to download a missing file and fail with a network error
        # that names neither the file nor the cache.
        locate = _crds("crds.core.config").locate_file
        for reftype, name in best.items():
            if not Path(locate(name, crds_layout.OBSERVATORY)).is_file():
                raise ReferenceNotFoundError(
                    f"the {reftype.upper()} reference {name} selected by {context} is missing from "
                    f"the CRDS cache {settings.cache_dir}"
                )
    paths = _crds("crds.client.api").cache_references(context, best)
    return {reftype: str(Path(path).resolve()) for reftype, path in paths.items()}


def reference_path(reftype: str, meta, *, override=None) -> str:
    """Absolute path of the `reftype` reference for exposure `meta`; `override` wins."""
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise InputFileError(
                path, f"override for the {reftype.upper()} reference does not exist"
            )
        return str(path.resolve())
    return best_references(selection_parameters(meta), [reftype])[reftype.lower()]


# The reference types that hold one row per optical element, and the node holding the rows.
ELEMENT_TABLES = {"photom": "phot_table", "apcorr": "data"}


def element_row(table, optical_element: str, reftype: str):
    """The row for ``optical_element`` of a ``reftype`` reference's table (ELEMENT_TABLES; rows are
    keyed by upper-case names).

    LookupError saying so when the table has none: the steps and the pool ask the same way.
    """
    try:
        return table[optical_element.upper()]
    except KeyError:
        raise LookupError(f"{reftype.upper()} table has no row for optical element {optical_element}") \
            from None


def _metadata_value(meta, path: str):
    node = meta
    for name in path.split("."):
        node = getattr(node, name, None)
        if node is None:
            return None
    return node


def _is_missing(value) -> bool:
    # Pool tables hold NaN where a column does not apply to an exposure.
    return value is None or (isinstance(value, float) and math.isnan(value))


def _describe(parameters: dict, context: str, reftype: str) -> str:
    """``name=value`` of the keywords the reftype's rmap matches on (all, if unknown)."""
    crds = _crds()
    try:
        imap = crds.get_symbolic_mapping(context).get_imap(crds_layout.INSTRUMENT)
        rmapping = imap.get_rmap(reftype)
        keys = [key for group in rmapping.parkey for key in group]
    except crds.CrdsError:
        keys = list(parameters)
    names = {_CRDS_PREFIX + path.upper(): column for column, path in SELECTION_COLUMNS.items()}
    return ", ".join(f"{names.get(key, key)}={parameters.get(key, 'UNDEFINED')}" for key in keys)
