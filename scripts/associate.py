"""associate: group calibrated images into high-level products (the workflow's association checkpoint).

``--grouping skycell`` (the default, romancal 1.1's ``skycell_asn`` with product type
``full``): each image joins one association per sky cell its footprint
(``meta.wcsinfo.s_region``, after tweakreg) touches, one per (program, cell, optical
element); the sky cells are those of a SKYCELLS reference (``--skycells``, else the one CRDS
selects for the earliest image's start time; see ``romanpipe.skycells``). Associations and
their products are named as romancal names them,
``rPPPPP_p_full_<cell>_<optical element>`` (data release ``p``), and the association records
its cell (``target`` and ``skycell_wcs_info``), so resample draws the mosaic on the cell's
fixed grid. A name and a tree depend only on the cell and its members: a new exposure
changes only the associations of the cells it touches.

``--grouping overlap``: images of the same program and optical element whose footprints
overlap on the sky, directly or through a chain of overlaps, make one mosaic (on a grid
made around them). Overlaps are computed with spherical-geometry. These association files
follow the naming of the romancal documentation (sections "asn_from_list" and
"Association Naming") ``rPPPPP-a3NNN_YYYYMMDDtHHMMSS_image_MMM_asn.json``; the version
id is the earliest member's start time, so that the same inputs always give the same names.
With ``--user-dir``, the ``*_asn.json`` files there are used as given instead: only
their members are re-pointed at this campaign's ``_cal`` products, found by name.

The checkpoint writes one index (a CSV row per association: its name, product and
tree as JSON); ``write`` then makes one association file from its row, so an
association whose members did not change is not rewritten and its mosaic not redone.

    python scripts/associate.py index --cal results/exposures/*_cal.asdf [--cal-list CAL.csv] \\
        --output results/associations.csv [--grouping overlap] [--skycells SKYCELLS.asdf]
        [--user-dir my_associations]
    python scripts/associate.py write --tree '{...}' --output results/associations/NAME_asn.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from romanpipe import cli, refs
from romanpipe.association import asn_from_list, association_name, read_association, write_association
from romanpipe.errors import InputFileError
from romanpipe.files import atomic_path
from romanpipe.footprints import s_region_vertices
from romanpipe.inputs import InputListError, listed_paths
from romanpipe.naming import split_suffix
from romanpipe.products import open_model
from romanpipe.skycells import SkyMap

import numpy as np
import pandas as pd
from astropy.time import Time
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from spherical_geometry.polygon import SphericalPolygon

log = logging.getLogger("associate")

ASN_TYPE = "image"
FIRST_CANDIDATE = 3001  # "a3NNN: discovered whole program associations" (seed)
GROUPINGS = ("skycell", "overlap")
# romancal 1.1's skycell_asn: data release "p" (its default), product type "full" (every
# exposure that touches the cell).
DATA_RELEASE = "p"
SKYCELL_PRODUCT_TYPE = "full"
INDEX_COLUMNS = ["asn", "product", "tree"]


@dataclass(frozen=True)
class CalibratedImage:
    path: Path
    program: int
    optical_element: str
    start_time: Time
    footprint: SphericalPolygon
    s_region: str


def read_image(path: Path) -> CalibratedImage:
    """The metadata grouping needs, from a _cal product (arrays are not read)."""
    with open_model(path) as model:
        meta = model.meta
        region = str(meta.wcsinfo.get("s_region", ""))
        try:
            program = int(meta.observation.program)
        except (TypeError, ValueError):
            raise InputFileError(path, f"meta.observation.program {meta.observation.program!r} "
                                       "is not a number") from None
        return CalibratedImage(path, program, str(meta.instrument.optical_element).upper(),
                               Time(meta.exposure.start_time), _polygon(path, region), region)


def group_images(images: list[CalibratedImage]) -> list[list[CalibratedImage]]:
    """Same program and optical element, linked by overlapping footprints; earliest group first."""
    groups = []
    keys = sorted({(image.program, image.optical_element) for image in images})
    for key in keys:
        members = [image for image in images if (image.program, image.optical_element) == key]
        overlaps = np.array([[a.footprint.intersects_poly(b.footprint) for b in members] for a in members])
        count, labels = connected_components(csr_matrix(overlaps), directed=False)
        for label in range(count):
            group = [image for image, own in zip(members, labels, strict=True) if own == label]
            groups.append(sorted(group, key=lambda im: (im.start_time.isot, im.path.name)))
    return sorted(groups, key=lambda g: (g[0].start_time.isot, g[0].program, g[0].optical_element))


def discovered_associations(images: list[CalibratedImage], index_dir: Path) -> list[dict]:
    """One index row per group: association name, product name, and the association tree."""
    rows = []
    for counter, group in enumerate(group_images(images), start=1):
        first = group[0]
        candidate = f"a{FIRST_CANDIDATE + counter - 1}"
        version_id = first.start_time.strftime("%Y%m%dt%H%M%S")
        name = association_name(first.program, candidate, version_id, ASN_TYPE, counter)
        product = f"r{first.program:05d}-{candidate}_{first.optical_element.lower()}"
        members = [os.path.relpath(image.path, index_dir) for image in group]
        tree = asn_from_list(members, product, asn_type=ASN_TYPE, asn_id=candidate,
                             program=f"{first.program:05d}", version_id=version_id,
                             asn_pool="results/pool.csv",
                             constraints=f"program={first.program:05d}, optical_element="
                                         f"{first.optical_element}, overlapping footprints")
        rows.append({"asn": name.removesuffix("_asn.json"), "product": product, "tree": tree})
    return rows


def skycell_association_name(program: int, cell: str, optical_element: str) -> str:
    """romancal 1.1's sky-cell association (and product) name, without ``_asn.json``."""
    return f"r{program:05d}_{DATA_RELEASE}_{SKYCELL_PRODUCT_TYPE}_{cell}_{optical_element.lower()}"


def skycell_associations(images: list[CalibratedImage], skymap: SkyMap, index_dir: Path) -> list[dict]:
    """One index row per (program, sky cell, optical element) that any image touches."""
    groups: dict[tuple[int, str, str], list[CalibratedImage]] = {}
    for image in images:
        cells = skymap.cells_touching(image.s_region)
        if not cells:
            log.warning("left out %s: its footprint touches no cell of the sky map %s", image.path.name,
                        skymap.path.name if skymap.path else "given")
        log.info("%s touches %s", image.path.name, " ".join(cells) or "no sky cell")
        for cell in cells:
            groups.setdefault((image.program, cell, image.optical_element), []).append(image)
    rows = []
    for (program, cell, element), group in sorted(groups.items()):
        name = skycell_association_name(program, cell, element)
        group = sorted(group, key=lambda im: (im.start_time.isot, im.path.name))
        members = [os.path.relpath(image.path, index_dir) for image in group]
        tree = asn_from_list(members, name, asn_type=ASN_TYPE, program=f"{program:05d}", target=cell,
                             asn_pool="results/pool.csv",
                             constraints=f"program={program:05d}, optical_element={element}, "
                                         f"sky cell {cell}")
        tree.update(data_release_id=DATA_RELEASE, skycell_wcs_info=skymap.cell(cell).wcs_info())
        rows.append({"asn": name, "product": name, "tree": tree})
    return rows


def campaign_skymap(images: list[CalibratedImage], path: Path | None) -> SkyMap:
    """The sky map given, else the SKYCELLS reference CRDS selects for the earliest image."""
    if path is None:
        earliest = min(image.start_time for image in images)
        path = Path(refs.best_references({"ROMAN.META.INSTRUMENT.NAME": "WFI",
                                          "ROMAN.META.EXPOSURE.START_TIME": earliest.iso},
                                         ["skycells"])["skycells"])
    log.info("sky cells of %s", path)
    return SkyMap.read(path)


def user_associations(user_dir: Path, cal_paths: list[Path], index_dir: Path) -> list[dict]:
    """The user's association files as given, their members re-pointed at our _cal products."""
    by_exposure = {split_suffix(path)[0]: path for path in cal_paths}
    rows = []
    for asn_path in sorted(user_dir.glob("*_asn.json")):
        association = read_association(asn_path)
        tree = json.loads(json.dumps(association.tree))
        for product in tree["products"]:
            for member in product["members"]:
                exposure = split_suffix(member["expname"])[0]
                if exposure not in by_exposure:
                    raise InputFileError(asn_path, f"member {member['expname']} is not among the "
                                                   "calibrated exposures of this campaign")
                member["expname"] = os.path.relpath(by_exposure[exposure], index_dir)
        product_name = split_suffix(Path(association.product_name).name)[0]
        rows.append({"asn": asn_path.name.removesuffix("_asn.json"), "product": product_name,
                     "tree": tree})
    if not rows:
        raise InputFileError(user_dir, "no *_asn.json association files in the user folder")
    return rows


def write_index(rows: list[dict], output: Path) -> None:
    table = pd.DataFrame([{**row, "tree": json.dumps(row["tree"], sort_keys=True)} for row in rows],
                         columns=INDEX_COLUMNS)
    duplicated = table["product"][table["product"].duplicated()].tolist()
    if duplicated:
        raise InputFileError(output, f"two associations make the same product: {', '.join(duplicated)}")
    with atomic_path(output) as staging:
        table.to_csv(staging, index=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="associate.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="group _cal products and write the association index")
    index.add_argument("--cal", type=Path, nargs="*", default=[], help="calibrated imaging products")
    index.add_argument("--cal-list", help="a CSV or Parquet table whose column `path` lists more of them "
                                          "(a survey's products do not fit on a command line)")
    index.add_argument("--output", type=Path, required=True, help="index CSV to write")
    index.add_argument("--user-dir", type=Path, help="use the *_asn.json files here as given")
    index.add_argument("--grouping", choices=GROUPINGS, default="skycell",
                       help="one association per sky cell and optical element, or per chain of "
                            "overlapping footprints (default: %(default)s)")
    index.add_argument("--skycells", type=Path,
                       help="the SKYCELLS reference for --grouping skycell (default: CRDS's selection)")
    index.add_argument("--left-out", type=json.loads, default={},
                       help="JSON object: imaging exposures that did not reach _cal -> why (logged)")
    write = commands.add_parser("write", help="write one association file from its index tree")
    write.add_argument("--tree", type=json.loads, required=True, help="the association as JSON")
    write.add_argument("--output", type=Path, required=True)
    for sub in (index, write):
        sub.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)

    if args.command == "write":
        write_association(args.tree, args.output)
        return
    if args.cal_list:
        try:
            args.cal += [Path(path) for path in listed_paths(None, args.cal_list)]
        except InputListError as err:
            raise InputFileError(args.cal_list, str(err).removeprefix(f"{args.cal_list}: ")) from None
    for exposure, reason in args.left_out.items():
        log.warning("left out %s: it did not reach _cal (%s)", exposure, reason)
    index_dir = args.output.parent / "associations"
    if args.user_dir:
        rows = user_associations(args.user_dir, args.cal, index_dir)
    elif args.grouping == "skycell" and args.cal:
        images = [read_image(path) for path in args.cal]
        rows = skycell_associations(images, campaign_skymap(images, args.skycells), index_dir)
    else:
        rows = discovered_associations([read_image(path) for path in args.cal], index_dir)
    write_index(rows, args.output)
    log.info("%d association(s) from %d calibrated image(s)", len(rows), len(args.cal))


def _polygon(path: Path, s_region: str) -> SphericalPolygon:
    try:
        ra, dec = s_region_vertices(s_region)
    except ValueError:
        raise InputFileError(path, f"meta.wcsinfo.s_region {s_region[:60]!r} is not a POLYGON ICRS "
                                   "footprint: run assign_wcs first") from None
    return SphericalPolygon.from_radec(ra, dec)

if __name__ == "__main__":
    cli.run_and_exit(main)
