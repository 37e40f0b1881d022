"""tweakreg: align image WCSs to each other and to an astrometric reference catalog.

Seed, "TweakReg": the source catalog of each image (source_detection's, or a custom
one) is matched to the reference catalog (``abs_refcat``: Gaia from the STScI
catalog service, or a local file) with tweakwcs' xyxymatch (``abs_searchrad``,
``abs_use2dhist``, ``abs_separation``, ``abs_tolerance``), a linear transformation
(``abs_fitgeometry``: shift, rshift, rscale, general) is fitted with sigma
clipping (``abs_nclip``, ``abs_sigma``), and the WCS gets a ``v2v3corr`` frame: the
tangent-plane correction (tweakwcs' Roman V2/V3 corrector) is inserted after
``v2v3``, so the frames become detector, v2v3, v2v3corr, world. The fit goes into
``meta.wcs_fit_results`` (status, fitgeom, matrix, shift, center, proper_rot,
proper, rot, <rot>, scale, <scale>, skew, rmse, mae, nmatches; shift, center, rmse
and mae in arcsec of the tangent plane) and the footprint into
``meta.wcsinfo.s_region``. An association is first aligned image to image
(``minobj``, ``searchrad``, ``use2dhist``, ``separation``, ``tolerance``,
``fitgeometry``, ``nclip``, ``sigma``, ``enforce_user_order``, ``expand_refcat``;
the detectors of one exposure move together), then as one block to the reference
catalog. Too few matches leave the WCS as it was: cal_step FAILED and the reason
in wcs_fit_results' status; an image without a source catalog is SKIPPED. One image
with ``--exposure-images`` (the other detectors of its exposure; the workflow gives
them) is fitted together with them as one rigid group (``align_exposure``, ours), so a
sparse detector is held by its neighbours' stars; only its own product is written.
``abs_separation`` defaults to the documented 0.1 arcsec; the group fit wants romancal 1.1's
1.0: tweakwcs matches once, after a shift-only first guess, and across an exposure a roll
leaves a far detector's sources ~0.5 arcsec off, within ``abs_tolerance`` (0.7) of a neighbour
closer than that; sources closer than ``abs_separation`` take no part, so no pair can be
swapped. In a small crowded field 1.0 leaves out so many stars that detections of cosmic
rays steer the fit (README, Known problems).

Reference catalogs are taken at the exposure's epoch (``meta.exposure.start_time``):
the catalog service is asked for that epoch, and a local catalog's ``pmra`` (which
includes cos(dec), as Gaia's) and ``pmdec`` (mas/yr) move its ``ra``, ``dec`` (deg)
from ``ref_epoch`` (Julian years, a column or the table's meta); sources without proper
motion are dropped, as the service drops them. Without network the service cannot be
reached and the step stops with a one-line error.

Catalogs: source_detection's ``meta.source_catalog.tweakreg_catalog`` (in the
image) or the file named by ``meta.source_catalog.tweakreg_catalog_name`` (beside
the image; ECSV, Parquet or ASDF); with ``use_custom_catalogs`` the ``catfile``
(image name, catalog name; an empty catalog name keeps the detected catalog) or,
without a catfile, the association members' ``tweakreg_catalog``. Columns x, y
(0-based pixels), or x_psf/y_psf, xcentroid/ycentroid, x_centroid/y_centroid.

    python scripts/tweakreg.py r..._sourcedetection.asdf r..._tweakreg.asdf --abs-refcat gaia_like.ecsv
    python scripts/tweakreg.py r..._wfi01_sourcedetection.asdf r..._wfi01_tweakreg.asdf \
        --exposure-images r..._wfi02_sourcedetection.asdf r..._wfi03_sourcedetection.asdf ...
    python scripts/tweakreg.py exposure_asn.json exposure_tweakreg_asn.json --abs-refcat ...
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from romanpipe import cli
from romanpipe.errors import InputFileError, PipelineError
from romanpipe.files import atomic_path
from romanpipe.footprints import s_region
from romanpipe.naming import STEP_SUFFIX
from romanpipe.products import COMPLETE, SKIPPED, exposure_group, open_model
from romanpipe.steprun import (
    StepRun,
    run_association_script,
    run_on_file,
    write_association_products,
)

import numpy as np
from astropy import units as u
from astropy.coordinates import angular_separation
from astropy.table import Table
from roman_datamodels import datamodels
from tweakwcs import RomanWCSCorrector, align_wcs
from tweakwcs.imalign import NotEnoughCatalogs
from tweakwcs.matchutils import MatchSourceConfusionError, XYXYMatch

log = logging.getLogger("tweakreg")

STEP = "tweakreg"
INPUT_MODELS = (datamodels.ImageModel,)
FAILED = "FAILED"
GAIA_CATALOGS = ("GAIADR1", "GAIADR2", "GAIADR3")
DEFAULT_ABS_REFCAT = "GAIADR3"
CATALOG_SERVICE_URL = "https://gsss.stsci.edu/webservices"
CATALOG_SERVICE_VARIABLE = "ASTROMETRIC_CATALOG_URL"  # as stcal: points the step at another service
CONNECT_TIMEOUT = 10.0  # seconds: an unreachable service must fail fast, whatever vo_timeout is

# The example of meta.wcs_fit_results in the romancal documentation, section "TweakReg", in its order.
WCS_FIT_KEYS = ("status", "fitgeom", "matrix", "shift", "center", "proper_rot", "proper", "rot", "<rot>",
                "scale", "<scale>", "skew", "rmse", "mae", "nmatches")
XY_COLUMNS = (("x", "y"), ("x_psf", "y_psf"), ("xcentroid", "ycentroid"), ("x_centroid", "y_centroid"))
ASDF_CATALOG_KEYS = ("source_catalog", "tweakreg_catalog", "catalog")
MAS_PER_RADIAN = 180.0 / math.pi * 3.6e6
# All images are fitted to the reference catalog as one rigid block (stcal does the same).
ABSOLUTE_GROUP = "absolute"


@dataclass(frozen=True)
class ImageToAlign:
    """One image: its WCS, pointing keywords (v2_ref, v3_ref, roll_ref), x/y catalog and exposure group.

    ``catalog`` None means the image has no source catalog and is skipped.
    """

    name: str
    wcs: object
    wcsinfo: Mapping
    catalog: Table | None
    group_id: Hashable


@dataclass(frozen=True)
class Alignment:
    """The outcome for one image: its WCS (corrected, or the input's), wcs_fit_results, cal_step value."""

    wcs: object
    fit_results: dict
    status: str


class _CountingMatch(XYXYMatch):
    """xyxymatch that remembers how many pairs it found: tweakwcs does not report a count too small to fit."""

    last_count = 0

    def __call__(self, refcat, imcat, tp_pscale=1.0, tp_units=None, **kwargs):
        ref_idx, input_idx = super().__call__(refcat, imcat, tp_pscale=tp_pscale, tp_units=tp_units, **kwargs)
        self.last_count = len(ref_idx)
        return ref_idx, input_idx


# ----------------------------------------------------------------------------- alignment


def align_images(images: Sequence[ImageToAlign], refcat: Table, parameters: Mapping,
                 refcat_name: str = DEFAULT_ABS_REFCAT) -> list[Alignment]:
    """Align ``images`` (relatively when they span several groups, then to ``refcat``).

    ``refcat`` has RA, DEC (deg) at the images' epoch; ``parameters`` holds the step's
    parameters (schema names). The images and their WCSs are not modified.
    """
    correctors = _correctors(images)
    groups = {corrector.meta["group_id"] for corrector in correctors}
    if len(groups) > 1:
        correctors = _relative_alignment(correctors, images, parameters)
    failure, nmatches = _absolute_alignment(correctors, refcat, parameters) if correctors else (None, 0)

    by_index = {corrector.meta["index"]: corrector for corrector in correctors}
    alignments = []
    for index, image in enumerate(images):
        corrector = by_index.get(index)
        if corrector is None:
            log.warning("%s: no source catalog, tweakreg skipped", image.name)
            alignments.append(Alignment(image.wcs, {"status": "SKIPPED: no source catalog"}, SKIPPED))
            continue
        fit_info = corrector.meta.get("fit_info") or {"status": "FAILED: no overlap with the reference"}
        status = f"FAILED: {failure}" if failure else str(fit_info["status"])
        if status == "SUCCESS":
            wcs = corrector.wcs
            wcs.name = f"FIT-LVL2-{refcat_name}"
            results = {key: _plain(fit_info[key]) for key in WCS_FIT_KEYS if key in fit_info}
            log.info("%s aligned to %s: %d matches, rms %.2f mas, shift (%.1f, %.1f) mas, rotation %.5f deg",
                     image.name, refcat_name, results["nmatches"], results["rmse"] * 1e3,
                     results["shift"][0] * 1e3, results["shift"][1] * 1e3, results["proper_rot"])
            alignments.append(Alignment(wcs, results, COMPLETE))
            continue
        if status == "FAILED: not enough matches":
            status += f" ({nmatches} < abs_minobj {parameters['abs_minobj']})"
        log.warning("%s: alignment to %s failed, WCS unchanged: %s", image.name, refcat_name, status)
        results = {"status": status, "fitgeom": parameters["abs_fitgeometry"], "nmatches": int(nmatches)}
        alignments.append(Alignment(image.wcs, results, FAILED))
    return alignments


def _correctors(images: Sequence[ImageToAlign]) -> list[RomanWCSCorrector]:
    """tweakwcs' correctors of the images that have a catalog (on their WCSs, which stay untouched)."""
    correctors = []
    for index, image in enumerate(images):
        if image.catalog is None:
            continue
        catalog = image.catalog.copy()
        catalog.meta["name"] = image.name
        wcsinfo = {key: float(image.wcsinfo[key]) for key in ("v2_ref", "v3_ref", "roll_ref")}
        correctors.append(RomanWCSCorrector(image.wcs, wcsinfo, meta={
            "catalog": catalog, "name": image.name, "group_id": image.group_id, "index": index}))
    return correctors


def _relative_alignment(correctors, images, parameters) -> list:
    """Align the groups to each other; the unaligned correctors back if that fails or moves too much."""
    if parameters["separation"] <= math.sqrt(2) * parameters["tolerance"]:
        log.warning("separation %.3g arcsec is not larger than sqrt(2) x tolerance %.3g: sources may be "
                    "confused", parameters["separation"], parameters["tolerance"])
    match = XYXYMatch(searchrad=parameters["searchrad"], separation=parameters["separation"],
                      use2dhist=parameters["use2dhist"], tolerance=parameters["tolerance"])
    try:
        align_wcs(correctors, refcat=None, enforce_user_order=parameters["enforce_user_order"],
                  expand_refcat=parameters["expand_refcat"], minobj=parameters["minobj"], match=match,
                  fitgeom=parameters["fitgeometry"], nclip=parameters["nclip"],
                  sigma=(parameters["sigma"], "rmse"), clip_accum=True)
    except (NotEnoughCatalogs, MatchSourceConfusionError) as err:
        log.warning("relative alignment not done: %s", err)
        return _correctors(images)
    # A correction larger than the search allows comes from false matches (stcal's check).
    limit = 2 * ((parameters["searchrad"] if parameters["use2dhist"] else 0.0) + parameters["tolerance"])
    moved = max(_footprint_motion_arcsec(corrector) for corrector in correctors)
    if moved >= limit:
        log.warning("relative alignment moved a footprint by %.2f arcsec (limit %.2f): not used",
                    moved, limit)
        return _correctors(images)
    for corrector in correctors:
        log.info("relative alignment of %s: %s", corrector.meta["name"],
                 corrector.meta.get("fit_info", {}).get("status"))
    return correctors


def _footprint_motion_arcsec(corrector) -> float:
    before = np.radians(corrector.original_wcs.footprint())
    after = np.radians(corrector.wcs.footprint())
    return float(np.degrees(angular_separation(before[:, 0], before[:, 1], after[:, 0], after[:, 1])).max()
                 * 3600.0)


def _absolute_alignment(correctors, refcat: Table, parameters) -> tuple[str | None, int]:
    """Fit all correctors as one block to ``refcat``: (reason of a failure before fitting, matches)."""
    if len(refcat) < parameters["abs_minobj"]:
        return (f"not enough reference sources in the field ({len(refcat)} < abs_minobj "
                f"{parameters['abs_minobj']})", 0)
    if parameters["abs_separation"] <= math.sqrt(2) * parameters["abs_tolerance"]:
        log.warning("abs_separation %.3g arcsec is not larger than sqrt(2) x abs_tolerance %.3g (as in the "
                    "romancal documentation): close pairs may be confused", parameters["abs_separation"],
                    parameters["abs_tolerance"])
    match = _CountingMatch(searchrad=parameters["abs_searchrad"], separation=parameters["abs_separation"],
                           use2dhist=parameters["abs_use2dhist"], tolerance=parameters["abs_tolerance"])
    for corrector in correctors:
        corrector.meta["group_id"] = ABSOLUTE_GROUP
        corrector.meta.pop("fit_info", None)
    try:
        align_wcs(correctors, refcat=refcat, enforce_user_order=True, expand_refcat=False,
                  minobj=parameters["abs_minobj"], match=match, fitgeom=parameters["abs_fitgeometry"],
                  nclip=parameters["abs_nclip"], sigma=(parameters["abs_sigma"], "rmse"), clip_accum=True)
    except NotEnoughCatalogs:
        return "no sources in the image catalogs", 0
    except MatchSourceConfusionError:
        return ("several sources matched one reference source: lower abs_tolerance or raise "
                "abs_separation"), match.last_count
    return None, match.last_count


def _plain(value):
    """numpy values as Python scalars and lists, which ASDF stores as plain YAML."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


# ----------------------------------------------------------------------------- reference catalog


def propagate_proper_motion(ra, dec, pmra, pmdec, from_epoch, to_epoch) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) deg moved by (pmra incl. cos dec, pmdec) mas/yr from ``from_epoch`` to ``to_epoch`` (years).

    The star moves on a straight line in space, without parallax or radial velocity (all a
    catalog without distances allows; astropy's apply_space_motion does the same but
    warns for every star without a distance): the arc travelled is atan(mu t), within
    0.1 microarcsecond of mu t below 20 arcsec. Valid at the poles, where steps in ra are not.
    """
    ra, dec = np.radians(ra), np.radians(dec)
    years = np.asarray(to_epoch, dtype=float) - np.asarray(from_epoch, dtype=float)
    position = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)])
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)])
    moved = position + years * (np.asarray(pmra) * east + np.asarray(pmdec) * north) / MAS_PER_RADIAN
    moved /= np.linalg.norm(moved, axis=0)
    return np.degrees(np.arctan2(moved[1], moved[0])) % 360.0, np.degrees(np.arcsin(moved[2]))


def footprint_cone(wcses) -> tuple[float, float, float]:
    """(ra, dec, radius) deg of a circle holding every corner of the WCSs' footprints."""
    corners = np.radians(np.vstack([wcs.footprint() for wcs in wcses]))
    vectors = np.stack([np.cos(corners[:, 1]) * np.cos(corners[:, 0]),
                        np.cos(corners[:, 1]) * np.sin(corners[:, 0]), np.sin(corners[:, 1])])
    centre = vectors.mean(axis=1)
    ra, dec = math.atan2(centre[1], centre[0]), math.atan2(centre[2], math.hypot(centre[0], centre[1]))
    radius = angular_separation(ra, dec, corners[:, 0], corners[:, 1]).max()
    return math.degrees(ra) % 360.0, math.degrees(dec), float(np.degrees(radius))


def read_reference_catalog(path: Path, epoch: float) -> Table:
    """RA, DEC (deg) at ``epoch`` of a local ECSV/Parquet catalog (ra, dec; pmra, pmdec, ref_epoch)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "abs_refcat: no such file (or give GAIADR1, GAIADR2 or GAIADR3)")
    try:
        table = Table.read(path, format="parquet") if path.suffix.lower() == ".parquet" else Table.read(path)
    except Exception as err:  # astropy's readers raise many types
        raise InputFileError(path, f"abs_refcat: unreadable table ({_one_line(err)})") from None
    columns = {name.lower(): name for name in table.colnames}
    if "ra" not in columns or "dec" not in columns:
        raise InputFileError(path, f"abs_refcat: no ra/dec columns (has {', '.join(table.colnames)})")
    ra = _values(table[columns["ra"]], u.deg)
    dec = _values(table[columns["dec"]], u.deg)
    if "pmra" in columns and "pmdec" in columns:
        ref_epoch = _reference_epoch(table, columns, path)
        pmra = _values(table[columns["pmra"]], u.mas / u.yr)
        pmdec = _values(table[columns["pmdec"]], u.mas / u.yr)
        # As the catalog service does when asked for an epoch: a source that cannot be moved goes.
        unmoved = int(np.count_nonzero(~(np.isfinite(pmra) & np.isfinite(pmdec))))
        ra, dec = propagate_proper_motion(ra, dec, pmra, pmdec, ref_epoch, epoch)
        log.info("%s: %d sources moved by their proper motions from epoch %s to %.4f, %d without motion "
                 "dropped", path.name, len(table) - unmoved, _epoch_text(ref_epoch), epoch, unmoved)
    else:
        log.warning("%s has no pmra/pmdec: positions used as given, whatever the exposure epoch", path.name)
    result = Table({"RA": ra, "DEC": dec})
    if "source_id" in columns:
        result["source_id"] = table[columns["source_id"]]
    result = result[np.isfinite(ra) & np.isfinite(dec)]
    result.meta["name"] = path.name
    return result


def _reference_epoch(table: Table, columns: dict, path: Path):
    for name in ("ref_epoch", "epoch"):
        if name in columns:
            return _values(table[columns[name]])
        if name in table.meta:
            return float(table.meta[name])
    raise InputFileError(path, "abs_refcat has pmra/pmdec but no ref_epoch (column or meta)")


def _values(column, unit=None) -> np.ndarray:
    """A column as floats, converted to ``unit`` when both it and the column have one; masked -> NaN."""
    values = np.ma.asarray(column, dtype=float)
    if unit is not None and column.unit is not None:
        values = values * column.unit.to(unit)
    return np.ma.filled(values, np.nan)


def _one_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def _epoch_text(epoch) -> str:
    values = np.unique(np.asarray(epoch))
    return f"{values[0]:.4f}" if values.size == 1 else f"{values.min():.4f}..{values.max():.4f}"


def query_catalog_service(catalog: str, ra: float, dec: float, radius: float, epoch: float,
                          timeout: float) -> Table:
    """RA, DEC (deg) at ``epoch`` of a Gaia release, from the STScI catalog service (stcal's query)."""
    import requests

    service = (os.environ.get(CATALOG_SERVICE_VARIABLE) or CATALOG_SERVICE_URL).rstrip("/")
    query = {"RA": f"{ra:.8f}", "DEC": f"{dec:.8f}", "EPOCH": f"{epoch:.4f}", "SR": f"{radius:.6f}",
             "FORMAT": "CSV", "CAT": catalog}
    try:
        response = requests.get(f"{service}/vo/CatalogSearch.aspx", params=query,
                                timeout=(CONNECT_TIMEOUT, timeout))
        response.raise_for_status()
    except requests.RequestException as err:
        raise PipelineError(f"abs_refcat {catalog}: the catalog service {service} cannot be reached "
                            f"({type(err).__name__}); give a local reference catalog file instead "
                            "(--abs-refcat catalogs/gaia_like.ecsv)") from None
    text = response.text
    if not text.strip() or text.startswith("No data records"):
        table = Table({"ra": np.zeros(0), "dec": np.zeros(0)})
    else:
        table = Table.read(text.splitlines(), format="ascii.csv", comment="#")
    keep = np.ones(len(table), dtype=bool)
    # Asked for an epoch, the service also returns sources it could not move (no proper motion).
    for name in ("pmra", "pmdec"):
        if name in table.colnames:
            keep &= ~np.ma.getmaskarray(table[name]) & np.isfinite(_values(table[name], u.mas / u.yr))
    result = Table({"RA": _values(table["ra"], u.deg)[keep], "DEC": _values(table["dec"], u.deg)[keep]})
    if "objID" in table.colnames:
        result["source_id"] = table["objID"][keep]
    result.meta["name"] = catalog
    log.info("%s: %d sources within %.4f deg of (%.6f, %.6f) at epoch %.4f", catalog, len(result), radius,
             ra, dec, epoch)
    return result


def reference_catalog(abs_refcat: str | None, wcses, epoch: float, *, margin_arcsec: float,
                      timeout: float) -> tuple[str, Table]:
    """(name, RA/DEC table at ``epoch``) of the sources within the images' footprints plus a margin."""
    choice = (abs_refcat or "").strip() or DEFAULT_ABS_REFCAT
    ra, dec, radius = footprint_cone(wcses)
    radius += margin_arcsec / 3600.0
    if choice.upper() in GAIA_CATALOGS:
        return choice.upper(), query_catalog_service(choice.upper(), ra, dec, radius, epoch, timeout)
    table = read_reference_catalog(Path(choice), epoch)
    distance = angular_separation(math.radians(ra), math.radians(dec), np.radians(table["RA"]),
                                  np.radians(table["DEC"]))
    inside = np.degrees(distance) <= radius
    log.info("%s: %d of %d sources within %.4f deg of the images", Path(choice).name, int(inside.sum()),
             len(table), radius)
    return Path(choice).name, table[inside]


# ----------------------------------------------------------------------------- source catalogs


def read_catalog_file(path: Path, table_format: str | None = None) -> Table:
    """A source catalog file: ASDF (rad's source catalog or a tree with a table), Parquet, or astropy's.

    ``table_format`` is the astropy format of files that are neither ASDF nor Parquet
    (None: astropy guesses from the name).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "source catalog not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".asdf":
            return _read_asdf_table(path)
        if suffix == ".parquet":
            return Table.read(path, format="parquet")
        return Table.read(path, format=table_format) if table_format else Table.read(path)
    except InputFileError:
        raise
    except Exception as err:  # astropy/asdf readers raise many types
        raise InputFileError(path, f"unreadable source catalog ({_one_line(err)})") from None


def _read_asdf_table(path: Path) -> Table:
    import asdf

    with asdf.open(path, lazy_load=False, memmap=False) as af:
        node = af.tree.get("roman", af.tree)
        for key in ASDF_CATALOG_KEYS:
            if key in node:
                return Table(node[key], copy=True)
    raise InputFileError(path, f"no catalog table ({', '.join(ASDF_CATALOG_KEYS)}) in this ASDF file")


def source_positions(table: Table, name: str, bounding_box=None) -> Table:
    """x, y (and flux) of a source catalog inside ``bounding_box`` ((xmin, xmax), (ymin, ymax))."""
    for x_name, y_name in XY_COLUMNS:
        if x_name in table.colnames and y_name in table.colnames:
            break
    else:
        raise ValueError(f"{name}: no source position columns (x, y or x_psf, y_psf or xcentroid, ycentroid "
                         f"or x_centroid, y_centroid; has {', '.join(table.colnames) or 'none'})")
    x, y = _values(table[x_name]), _values(table[y_name])
    keep = np.isfinite(x) & np.isfinite(y)
    if bounding_box is not None:
        (xmin, xmax), (ymin, ymax) = bounding_box
        keep &= (x > xmin) & (x < xmax) & (y > ymin) & (y < ymax)
    positions = Table({"x": x[keep], "y": y[keep]})
    if "flux" in table.colnames:
        positions["flux"] = _values(table["flux"])[keep]
    positions.meta["name"] = name
    return positions


def detected_catalog(model, image_path: Path) -> Table | None:
    """source_detection's catalog of an image: in memory, else the file it names (beside the image)."""
    source_catalog = model.meta.get("source_catalog")
    if source_catalog is None:
        return None
    in_memory = source_catalog.get("tweakreg_catalog")
    if in_memory is not None:
        return Table(np.asarray(in_memory))
    name = source_catalog.get("tweakreg_catalog_name")
    if name:
        return read_catalog_file(Path(image_path).parent / name)
    return None


def read_catfile(path: Path) -> dict[str, Path | None]:
    """catfile lines ``image [catalog]``: image file name -> catalog path (None: the detected catalog)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise InputFileError(path, f"catfile unreadable ({type(err).__name__})") from None
    entries = {}
    for number, line in enumerate(lines, start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise InputFileError(path, f"line {number}: expected 'image [catalog]', got {line.strip()!r}")
        entries[Path(words[0]).name] = path.parent / words[1] if len(words) == 2 else None
    return entries


def custom_catalog_paths(image_names: Sequence[str], *, use_custom_catalogs: bool, catfile: Path | None,
                         association_entries: Sequence[Path | None] | None = None) -> list[Path | None]:
    """Each image's custom catalog, or None for its detected one (the romancal documentation:
    the catfile wins over the ASN)."""
    if not use_custom_catalogs:
        return [None] * len(image_names)
    if catfile:
        entries = read_catfile(catfile)
        return [entries.get(Path(name).name) for name in image_names]
    if association_entries and any(association_entries):
        return list(association_entries)
    log.warning("use_custom_catalogs is set but no catfile or association entry names a catalog: "
                "the detected catalogs are used")
    return [None] * len(image_names)


def association_catalog_entries(association) -> list[Path | None]:
    """The science members' ``tweakreg_catalog`` (relative to the association), None where absent or empty."""
    entries = []
    for product in association.tree["products"]:
        for member in product["members"]:
            if member.get("exptype", "science") != "science":
                continue
            name = member.get("tweakreg_catalog")
            entries.append(association.path.parent / name if name else None)
    return entries


# ----------------------------------------------------------------------------- products


def image_to_align(model, path: Path, custom_catalog: Path | None, catalog_format: str) -> ImageToAlign:
    """What the alignment needs from an opened image and its catalog."""
    wcs = model.meta.get("wcs")
    if wcs is None:
        raise InputFileError(path, "no meta.wcs: run assign_wcs first")
    if "v2v3" not in wcs.available_frames:
        raise InputFileError(path, f"the WCS has no v2v3 frame (frames {wcs.available_frames})")
    wcsinfo = {key: float(model.meta.wcsinfo[key]) for key in ("v2_ref", "v3_ref", "roll_ref")}
    if custom_catalog is not None:
        log.info("%s: custom catalog %s", path.name, custom_catalog)
        table = read_catalog_file(custom_catalog, catalog_format)
    else:
        table = detected_catalog(model, path)
    catalog = None
    if table is not None:
        box = wcs.bounding_box.bounding_box(order="F") if wcs.bounding_box is not None else None
        try:
            catalog = source_positions(table, path.name, box)
        except ValueError as err:
            raise InputFileError(custom_catalog or path, str(err)) from None
        log.info("%s: %d sources in the catalog, %d inside the image", path.name, len(table), len(catalog))
    return ImageToAlign(path.name, wcs, wcsinfo, catalog, exposure_group(model, path.name))


def exposure_epoch(model, path: Path) -> float:
    """meta.exposure.start_time in Julian years (the scale of Gaia's ref_epoch)."""
    try:
        return float(model.meta.exposure.start_time.jyear)
    except AttributeError:
        raise InputFileError(path, "no meta.exposure.start_time: the epoch of the reference catalog "
                                   "is unknown") from None


def apply_alignment(model, alignment: Alignment) -> None:
    """Put the alignment into the model; the in-memory source catalog goes (the romancal
    documentation: tweakreg deletes it)."""
    model.meta.wcs = alignment.wcs
    model.meta["wcs_fit_results"] = alignment.fit_results
    if alignment.status == COMPLETE:
        model.meta.wcsinfo.s_region = s_region(alignment.wcs)
    source_catalog = model.meta.get("source_catalog")
    if source_catalog is not None and "tweakreg_catalog" in source_catalog:
        del source_catalog["tweakreg_catalog"]


def write_reference_catalog(refcat: Table, name: str, folder: Path) -> Path:
    """The reference catalog used, at the exposure epoch, as ``fit_<name>_ref.ecsv`` (atomically)."""
    path = Path(folder) / f"fit_{Path(name).stem.lower()}_ref.ecsv"
    with atomic_path(path) as staging:
        refcat.write(staging, format="ascii.ecsv", overwrite=True)
    log.info("wrote %s", path)
    return path


def align_models(models, paths: Sequence[Path], parameters: Mapping, output: Path,
                 association=None, one_group: bool = False) -> list[str]:
    """Align ``models`` (ImageModels read from ``paths``, updated in place) to each other and to the
    absolute reference catalog; their cal_step statuses. ``one_group``: they are the detectors of
    one exposure, whatever their metadata says. ``save_abs_catalog`` writes the catalog into
    ``catalog_path``, default beside ``output``."""
    custom = custom_catalog_paths(
        [path.name for path in paths], use_custom_catalogs=parameters["use_custom_catalogs"],
        catfile=Path(parameters["catfile"]) if parameters["catfile"] else None,
        association_entries=association_catalog_entries(association) if association else None)
    images = [image_to_align(model, path, catalog, parameters["catalog_format"])
              for model, path, catalog in zip(models, paths, custom, strict=True)]
    if one_group:
        images = [replace(image, group_id=images[0].group_id) for image in images]
    epoch = exposure_epoch(models[0], paths[0])
    try:
        refcat_name, refcat = reference_catalog(
            parameters["abs_refcat"], [image.wcs for image in images], epoch,
            margin_arcsec=parameters["abs_searchrad"], timeout=parameters["vo_timeout"])
    except ValueError as err:  # e.g. a WCS without bounding box
        raise InputFileError(paths[0], str(err)) from None
    alignments = align_images(images, refcat, parameters, refcat_name)
    for model, alignment in zip(models, alignments, strict=True):
        apply_alignment(model, alignment)
    if parameters["save_abs_catalog"]:
        folder = Path(parameters["catalog_path"]) if parameters["catalog_path"] else output.parent
        write_reference_catalog(refcat, refcat_name, folder)
    return [alignment.status for alignment in alignments]


def run(image, step: StepRun, exposure_images: Sequence[Path] = ()):
    """``image`` (an ImageModel, updated and returned) aligned to the absolute reference catalog.

    With ``align_exposure`` and ``exposure_images`` (the other detectors of its exposure, read
    but not written) all are fitted as one rigid group, as romancal aligns an exposure: a
    detector with a handful of stars is then held by its neighbours' stars.
    """
    path = Path(step.input)
    others = [Path(other) for other in exposure_images if Path(other).resolve() != path.resolve()]
    if not (step.parameters["align_exposure"] and others):
        (status,) = align_models([image], [path], step.parameters, step.output)
        return image, status
    log.info("%s aligned with the %d other detectors of its exposure as one group", path.name, len(others))
    # In name order, whichever detector's job this is: tweakwcs fits the group in its first image's
    # tangent plane, and every detector of the exposure must get the same fit.
    paths = sorted([path, *others], key=lambda item: item.name)
    with ExitStack() as open_files:
        models = [image if item == path else open_files.enter_context(open_model(item, INPUT_MODELS))
                  for item in paths]
        statuses = align_models(models, paths, step.parameters, step.output, one_group=True)
    return image, statuses[paths.index(path)]


def exposure_images_argument(parser) -> None:
    parser.add_argument("--exposure-images", nargs="+", type=Path, default=[], metavar="IMAGE",
                        help="the other detectors' images of INPUT's exposure, aligned with it as one "
                             "group (align_exposure); only INPUT's product is written")


def align_association(association, paths: Sequence[Path], args, parameters: Mapping) -> None:
    """The science members ``paths`` of ``association`` aligned together, written beside ``args.output``."""
    with ExitStack() as open_files:
        models = [open_files.enter_context(open_model(path, INPUT_MODELS)) for path in paths]
        statuses = align_models(models, paths, parameters, args.output, association)
        write_association_products(models, association, args.output, STEP, STEP_SUFFIX[STEP], args,
                                   parameters, statuses=statuses)


def align_file(args, parameters: Mapping) -> None:
    """One image aligned alone, or with the other detectors of its exposure (``--exposure-images``)."""
    for other in args.exposure_images:
        if not other.is_file():
            raise InputFileError(other, "--exposure-images: no such image")
    run_on_file(STEP, functools.partial(run, exposure_images=args.exposure_images), INPUT_MODELS, args,
                parameters)


def main(argv=None) -> None:
    run_association_script(STEP, __doc__, align_association, align_file, argv, exposure_images_argument)


if __name__ == "__main__":
    cli.run_and_exit(main)
