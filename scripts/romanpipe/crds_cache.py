"""Build and extend a local CRDS cache for Roman WFI from reference files.

No machine of this project reaches a CRDS server, so the cache that ``crds`` selects
from in ``CRDS_MODE=local`` is made here, in the layout and file formats crds reads:

    <cache>/config/roman/server_config        operational context and server facts
    <cache>/mappings/roman/roman_NNNN.pmap     pipeline context -> instrument mapping
    <cache>/mappings/roman/roman_wfi_NNNN.imap instrument mapping -> one rmap per reftype
    <cache>/mappings/roman/roman_wfi_<reftype>_NNNN.rmap
    <cache>/references/roman/wfi/roman_wfi_<reftype>_NNNN.asdf

Each delivery writes new mappings (never rewrites one: crds memoises mappings by
name) and then points ``operational_context`` at the new pmap, so old contexts keep
selecting what they always selected. The rmap headers come from crds' own templates
(``crds/roman/specs/wfi_<reftype>.rmap``), the insertion of a reference into an rmap
and the translation of its metadata into match values are crds' own code, and every
mapping is checksummed by ``crds.refactoring.checksum``.
"""

import ast
import datetime
import logging
import pprint
import shutil
from collections import defaultdict
from pathlib import Path

import crds
import roman_datamodels as rdm
from crds.core import rmap
from crds.refactoring import checksum

from .crds_layout import (
    INSTRUMENT,
    OBSERVATORY,
    REFERENCE_NAME,
    config_dir,
    current_context,
    mappings_dir,
    next_reference_name,
    references_dir,
)
from .files import atomic_path

log = logging.getLogger(__name__)

_CONTEXT_PARKEY = ("ROMAN.META.INSTRUMENT.NAME",)
_SPECS_DIR = Path(crds.__file__).parent / OBSERVATORY / "specs"


def context_references(cache_dir, context: str) -> list[str]:
    """Sorted names of every reference file that `context` of the cache can select."""
    return sorted(_load(cache_dir, context).reference_names())


def deliver(cache_dir, reference_files, *, description: str = "") -> str:
    """Add `reference_files` to the cache at `cache_dir` under a new context; return its pmap name.

    Each file is inserted into the rmap of its ``meta.reftype`` at the match values and
    USEAFTER of its metadata; one for the same match values and USEAFTER as an earlier
    file replaces it in the new context. The first delivery into an empty directory
    builds the whole cache. A file not named ``roman_wfi_<reftype>_<NNNN>.asdf`` is
    delivered under the next free serial of its reftype (logged).
    """
    references = [Path(file).resolve() for file in reference_files]
    if not references:
        raise ValueError("no reference files to deliver")
    headers = [_reference_header(path) for path in references]
    names = _delivery_names(cache_dir, references, headers)
    _check_names_are_new(cache_dir, names)
    for directory in (mappings_dir(cache_dir), references_dir(cache_dir), config_dir(cache_dir)):
        directory.mkdir(parents=True, exist_ok=True)
    # crds would otherwise guess the reference layout from the number of files it finds.
    (config_dir(cache_dir) / "ref_cache_subdir_mode").write_text("instrument")

    previous_context = current_context(cache_dir)
    previous_imap = None
    if previous_context:
        previous_imap = _load(cache_dir, previous_context).get_imap(INSTRUMENT)
    rmap_names = dict(previous_imap.selector) if previous_imap else {}
    comment = description or None

    by_reftype = defaultdict(list)
    for name, header in zip(names, headers, strict=True):
        by_reftype[header["ROMAN.META.REFTYPE"].lower()].append((name, header))
    for reftype, deliveries in sorted(by_reftype.items()):
        if reftype in rmap_names:
            previous_rmap = previous_imap.get_rmap(reftype)
        else:
            previous_rmap = _rmap_template(reftype)
        rmap_names[reftype] = _write_successor_rmap(
            cache_dir, reftype, previous_rmap, deliveries, comment
        )

    created = "created by romanpipe.crds_cache"
    imap_header = {
        "name": _next_name(cache_dir, f"{OBSERVATORY}_{INSTRUMENT}", ".imap"),
        "derived_from": previous_imap.basename if previous_imap else created,
        "instrument": INSTRUMENT.upper(),
        "mapping": "INSTRUMENT",
        "observatory": OBSERVATORY.upper(),
        "parkey": _CONTEXT_PARKEY,
    }
    imap_name = _write_mapping(cache_dir, imap_header, dict(sorted(rmap_names.items())), comment)
    pmap_header = {
        "name": _next_name(cache_dir, OBSERVATORY, ".pmap"),
        "derived_from": previous_context or created,
        "mapping": "PIPELINE",
        "observatory": OBSERVATORY.upper(),
        "parkey": _CONTEXT_PARKEY,
    }
    pmap_name = _write_mapping(cache_dir, pmap_header, {INSTRUMENT.upper(): imap_name}, comment)

    # References go in before the context that names them becomes operational.
    for path, name in zip(references, names, strict=True):
        shutil.copy2(path, references_dir(cache_dir) / name)
    _set_operational_context(cache_dir, pmap_name)
    log.info("delivered %d reference file(s) as %s", len(references), pmap_name)
    return pmap_name


def _delivery_names(cache_dir, references, headers) -> list[str]:
    """The name each reference gets in the cache: its own when it follows CRDS's convention
    (``roman_wfi_<reftype>_<NNNN>.asdf`` of its own reftype), else the next free serial of
    its reftype, so that no later delivery can take the same name."""
    names = []
    for path, header in zip(references, headers, strict=True):
        if "ROMAN.META.REFTYPE" not in header:
            raise ValueError(f"{path}: no meta.reftype, not a reference file")
        reftype = header["ROMAN.META.REFTYPE"].lower()
        match = REFERENCE_NAME.match(path.name)
        if match and match["reftype"] != reftype:
            raise ValueError(f"{path}: named as a {match['reftype'].upper()} reference but its "
                             f"meta.reftype is {reftype.upper()}")
        if match:
            names.append(path.name)
        else:
            following = [other.name for other in references if REFERENCE_NAME.match(other.name)]
            names.append(next_reference_name(reftype, references_dir(cache_dir), taken=names + following))
            log.info("%s is delivered as %s", path.name, names[-1])
    return names


def _check_names_are_new(cache_dir, names):
    """CRDS files are immutable: a changed reference is delivered under a new name."""
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"reference files delivered twice: {', '.join(duplicates)}")
    taken = sorted(name for name in names if (references_dir(cache_dir) / name).exists())
    if taken:
        raise FileExistsError(
            f"already in the CRDS cache {cache_dir}, deliver under new names: {', '.join(taken)}"
        )


def _write_successor_rmap(cache_dir, reftype, previous, deliveries, comment) -> str:
    """Write the next `reftype` rmap: `previous` with `deliveries` inserted; return its name."""
    updated = previous
    for name, header in deliveries:
        # crds' own translation: USEAFTER becomes the START_TIME match, P_ patterns apply.
        match_header = updated.reference_to_dataset_header(header)
        updated = updated.insert_header_reference(match_header, name)
    for replaced in sorted(set(previous.reference_names()) - set(updated.reference_names())):
        log.info("%s: %s is replaced by the new delivery", reftype, replaced)
    header = {
        **updated.header,
        "name": _next_name(cache_dir, f"{OBSERVATORY}_{INSTRUMENT}_{reftype}", ".rmap"),
        "derived_from": previous.basename,
    }
    return _write_mapping(cache_dir, header, updated.selector, comment)


def _reference_header(path) -> dict:
    """Metadata of a reference file as the flat ``ROMAN.META.…`` header crds matches on.

    The tree is opened lazily, so arrays of full-size references are never read.
    """
    with rdm.open(path) as model:
        return {key.upper(): value for key, value in model.get_crds_parameters().items()}


def _rmap_template(reftype: str) -> rmap.ReferenceMapping:
    """crds' empty template rmap for `reftype`, which defines its header and parkeys."""
    spec = _SPECS_DIR / f"{INSTRUMENT}_{reftype}.rmap"
    if not spec.exists():
        raise ValueError(f"crds {crds.__version__} knows no Roman reference type {reftype!r}")
    return rmap.load_mapping(str(spec))


def _load(cache_dir, mapping_name: str) -> rmap.Mapping:
    # Loading by path, uncached, keeps this independent of CRDS_PATH and crds' memos.
    return rmap.load_mapping(mapping_name, path=str(mappings_dir(cache_dir)))


def _next_name(cache_dir, stem: str, extension: str) -> str:
    """``<stem>_<NNNN><extension>`` with the serial after the highest one in the cache."""
    existing = mappings_dir(cache_dir).glob(f"{stem}_[0-9][0-9][0-9][0-9]{extension}")
    serials = [int(path.stem[-4:]) for path in existing]
    return f"{stem}_{max(serials, default=0) + 1:04d}{extension}"


def _write_mapping(cache_dir, header: dict, selector, comment: str | None) -> str:
    """Write a mapping with crds' formatter and checksum; return its name."""
    path = mappings_dir(cache_dir) / header["name"]
    path.write_text(rmap.Mapping(str(path), header, selector, comment=comment).format())
    checksum.update_checksum(str(path))
    # update_checksum only logs (and leaves the file unsummed) when crds rejects the
    # mapping; loading verifies the checksum and so turns that into an exception.
    rmap.load_mapping(str(path))
    return header["name"]


def _set_operational_context(cache_dir, pmap_name: str) -> None:
    path = config_dir(cache_dir) / "server_config"
    server_config = ast.literal_eval(path.read_text()) if path.exists() else {
        "observatory": OBSERVATORY,
        "effective_mode": "local",
        "bad_files_list": [],
        "bad_files": "",
        "crds_version": {"str": crds.__version__},
    }
    server_config.update(
        operational_context=pmap_name,
        edit_context=pmap_name,
        last_synced=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    # Readers in other processes see either the old or the new file, never half of one.
    with atomic_path(path) as staging:
        staging.write_text(pprint.pformat(server_config))
