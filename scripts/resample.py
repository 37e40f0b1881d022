"""resample: drizzle the science members of an association onto one sky grid (the _i2d mosaic).

Seed, "Resample": every input's GWCS (forward) and the output grid's inverse
map input pixels onto a TAN grid that covers all inputs at the first input's
orientation and pixel scale (``pixel_scale_ratio``, ``pixel_scale``,
``rotation``, ``crpix``, ``crval``, ``output_shape``), or onto ``output_wcs`` (an
ASDF file with a GWCS under ``wcs``), or, for an association of one sky cell
(``skycell_wcs_info``) with ``resample_on_skycell``, onto the cell's fixed grid (the
mosaic's ``meta.wcsinfo.skycell_name`` names it). ``drizzle`` co-adds the data (MJy/sr,
minus any sky level that skymatch recorded without subtracting) with weights
``ivm`` (1/VAR_RNOISE) or ``exptime`` and the DQ mask of ``good_bits``, using
``kernel`` and ``pixfrac``; the context image records which inputs touched each
pixel (32 per plane); variances are combined with squared weights and ``err`` is
the root of their sum (see romanpipe.drizzling). ``fillval`` fills pixels no
input reached (INDEF leaves NaN). ``single`` makes one mosaic per exposure
instead (OUTPUT is then an association listing them), ``blendheaders`` tabulates
the inputs' metadata, ``allowed_memory`` (or DMODEL_ALLOWED_MEMORY) refuses
outputs larger than that fraction of the available memory, and ``in_memory``
false keeps the output arrays in memory-mapped files beside OUTPUT while drizzling.

    python scripts/resample.py r..._asn.json r..._i2d.asdf [--pixel-scale-ratio 0.5] [--rotation 0]
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

from romanpipe import cli, drizzling
from romanpipe.association import (
    Association,
    is_association,
    listing,
    write_association,
)
from romanpipe.drizzle_models import exposure_from_model, mosaic_model
from romanpipe.errors import InputFileError, ParameterError
from romanpipe.naming import product_name
from romanpipe.output_grid import load_output_wcs, make_output_wcs
from romanpipe.products import open_model
from romanpipe.resample_setup import Scratch, check_memory, mosaic_bytes, parse_pair, scratch_space
from romanpipe.skycells import DRIZZLE_MARGIN, SkyCell, association_cell
from romanpipe.steprun import run_association_script, write_product

from roman_datamodels import datamodels

log = logging.getLogger("resample")

STEP = "resample"


def output_grid(exposures: list[drizzling.Exposure], parameters: dict):
    """The output WCS: ``output_wcs`` from its file, else built around every input's footprint."""
    output_shape = parse_pair(parameters["output_shape"], int, "output_shape")
    if output_shape is not None and min(output_shape) < 1:
        raise ParameterError(f"output_shape: values must be >= 1, got {output_shape}")
    if parameters["output_wcs"]:
        path = Path(parameters["output_wcs"])
        if not path.is_file():
            raise InputFileError(path, "output_wcs file not found")
        try:
            return load_output_wcs(path, output_shape)
        except Exception as err:  # asdf and gwcs raise many types
            raise InputFileError(path, f"no usable GWCS under 'wcs' ({err})") from None
    wcs, _ = make_output_wcs(
        [e.wcs for e in exposures], [e.shape for e in exposures],
        pixel_scale_ratio=parameters["pixel_scale_ratio"], pixel_scale=parameters["pixel_scale"],
        rotation=parameters["rotation"], crpix=parse_pair(parameters["crpix"], float, "crpix"),
        crval=parse_pair(parameters["crval"], float, "crval"), output_shape=output_shape)
    return wcs


def resample_models(models: list, names: list[str], parameters: dict, *, association_name: str,
                    scratch: Scratch | None = None, cell: SkyCell | None = None) -> list:
    """MosaicModels of ``models`` (one, or one per exposure with ``single``); inputs are not modified.

    ``cell``: the association's sky cell, whose grid (and name, ``meta.wcsinfo.skycell_name``)
    the mosaics take unless ``resample_on_skycell`` is false or ``output_wcs`` is given.
    """
    try:
        exposures = [exposure_from_model(m, name) for m, name in zip(models, names, strict=True)]
    except ValueError as err:
        raise ParameterError(f"an input cannot be resampled: {err}") from None
    on_cell = cell is not None and parameters["resample_on_skycell"] and not parameters["output_wcs"]
    if on_cell:
        log.info("resampling onto sky cell %s (its fixed grid; the grid parameters are not used)", cell.name)
    output_wcs = cell.wcs(DRIZZLE_MARGIN) if on_cell else output_grid(exposures, parameters)
    check_memory(mosaic_bytes(output_wcs.array_shape, len(exposures)), parameters["allowed_memory"],
                 f"a {output_wcs.array_shape} resampled image")
    log.info("output grid %d x %d pixels", output_wcs.array_shape[1], output_wcs.array_shape[0])
    if parameters["single"]:
        selections = drizzling.exposure_indices(exposure.group for exposure in exposures)
    else:
        selections = [list(range(len(exposures)))]
    products = []
    for selection in selections:
        mosaic = drizzling.resample(
            (exposures[i] for i in selection), output_wcs, n_inputs=len(selection),
            kernel=parameters["kernel"], pixfrac=parameters["pixfrac"], fillval=parameters["fillval"],
            weight_type=parameters["weight_type"], good_bits=parameters["good_bits"], scratch=scratch)
        if on_cell:
            mosaic = drizzling.cropped(mosaic, DRIZZLE_MARGIN, cell.wcs())
        products.append(mosaic_model(
            mosaic, [models[i] for i in selection], association_name=association_name,
            good_bits=parameters["good_bits"], weight_type=parameters["weight_type"],
            pixfrac=parameters["pixfrac"], blend=parameters["blendheaders"]))
        if on_cell:
            products[-1].meta.wcsinfo.skycell_name = cell.name
    return products


def write_single_mosaics(products: list, association: Association, output: Path, args,
                         parameters: dict) -> None:
    """Each exposure's mosaic as ``<its first member>_i2d`` beside ``output``; ``output`` lists them."""
    written = [write_product(product, product_name(product.meta.resample.members[0], "i2d", output.parent),
                             STEP, args, parameters) for product in products]
    write_association(listing(association, written), output)


def resample_association(association: Association, members: list[Path], args, parameters: dict) -> None:
    """The members' mosaic at ``args.output`` (with ``single``, one per exposure, listed there)."""
    if parameters["single"] and not is_association(args.output):
        raise ParameterError("single=true writes one mosaic per exposure: OUTPUT must be an association "
                             "(.json) listing them")
    with ExitStack() as stack:
        models = [stack.enter_context(open_model(path, (datamodels.ImageModel,))) for path in members]
        scratch = stack.enter_context(scratch_space(parameters["in_memory"], args.output.parent))
        try:
            products = resample_models(models, [p.name for p in members], parameters,
                                       association_name=args.input.name, scratch=scratch,
                                       cell=association_cell(association.tree))
        except ValueError as err:
            raise InputFileError(args.input, str(err)) from None
        if parameters["single"]:
            write_single_mosaics(products, association, args.output, args, parameters)
        else:
            write_product(products[0], args.output, STEP, args, parameters)


def main(argv=None) -> None:
    run_association_script(STEP, __doc__, resample_association, argv=argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
