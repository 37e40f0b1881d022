"""Running romancal 1.1 on our inputs with our reference files (the `peer` extra; benchmarks only).

romancal is pointed at the very reference files our run used (``override_<reftype>``,
taken from our pool table) and at the simulated CRDS cache in local mode, so no CRDS
server is needed. Where romancal 1.1 needs a reference the romancal documentation does not define, a
neutral one is written (an identity INVERSELINEARITY) or the step is skipped
(DARKDECAYSIGNAL); a FLAT covering the whole readout is trimmed to the science area,
the shape romancal requires. Also a command line, so that ``bench.py`` can time each
run in its own process::

    python benchmarks/peer.py exposure UNCAL OUT_CAL --pool results/pool.csv --algorithm ols_cas22 \
        [--abs-refcat catalogs/gaia_like.ecsv] [--romancal-default]
    python benchmarks/peer.py step rampfit IN OUT --pool results/pool.csv
    python benchmarks/peer.py mosaic ASN OUT_I2D [--output-wcs grid.asdf]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

REFERENCE_BORDER = 4
FULL_READOUT_COLUMNS = 4096  # romancal's refpix works on whole 128-column channels of a full row

# romancal step alias in ExposurePipeline -> our step, for the reference overrides.
EXPOSURE_STEPS = {
    "dq_init": "dq_init",
    "saturation": "saturation",
    "refpix": "refpix",
    "linearity": "linearity",
    "rampfit": "ramp_fit",
    "dark_current": "dark_current",
    "assign_wcs": "assign_wcs",
    "flatfield": "flat_field",
    "photom": "photom",
}
_STEP_CLASSES = {
    "dq_init": ("romancal.dq_init", "DQInitStep"),
    "saturation": ("romancal.saturation", "SaturationStep"),
    "refpix": ("romancal.refpix", "RefPixStep"),
    "linearity": ("romancal.linearity", "LinearityStep"),
    "rampfit": ("romancal.ramp_fitting", "RampFitStep"),
    "dark_current": ("romancal.dark_current", "DarkCurrentStep"),
    "assign_wcs": ("romancal.assign_wcs", "AssignWcsStep"),
    "flatfield": ("romancal.flatfield", "FlatFieldStep"),
    "photom": ("romancal.photom", "PhotomStep"),
    "flux": ("romancal.flux", "FluxStep"),
    "skymatch": ("romancal.skymatch", "SkyMatchStep"),
    "outlier_detection": ("romancal.outlier_detection", "OutlierDetectionStep"),
    "resample": ("romancal.resample", "ResampleStep"),
}


def configure_environment(crds_cache: str | Path, environ=os.environ) -> dict:
    """CRDS from the local cache only (romancal asks for a context even with overrides)."""
    environ.update(CRDS_PATH=str(crds_cache), CRDS_MODE="local",
                   CRDS_SERVER_URL="https://crds-serverless-mode.stsci.edu",
                   STPIPE_DISABLE_CRDS_STEPPARS="true")
    return environ


def identity_inverselinearity(path: Path, coefficients_shape: tuple[int, ...]) -> Path:
    """An INVERSELINEARITY that changes nothing (romancal 1.1 refuses to run linearity without one)."""
    if path.is_file():
        return path
    import roman_datamodels.datamodels as rdm

    model = rdm.InverselinearityRefModel.create_fake_data(shape=coefficients_shape)
    model.coeffs = np.zeros(coefficients_shape, np.float32)
    model.coeffs[1] = 1.0
    model.dq = np.zeros(coefficients_shape[1:], np.uint32)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.to_asdf(path)
    return path


def science_area_flat(flat_path: Path, image_shape: tuple[int, int], folder: Path) -> Path:
    """The FLAT itself if it has the image's shape, else a copy with its reference border trimmed."""
    import roman_datamodels.datamodels as rdm

    with rdm.open(flat_path) as flat:
        if flat.data.shape == tuple(image_shape):
            return flat_path
        trimmed_path = folder / f"{flat_path.stem}_science_area.asdf"
        if not trimmed_path.is_file():
            inner = np.s_[..., REFERENCE_BORDER:-REFERENCE_BORDER, REFERENCE_BORDER:-REFERENCE_BORDER]
            trimmed = flat.copy()
            for name in ("data", "dq", "err"):
                if name in flat:
                    trimmed[name] = np.asarray(flat[name])[inner].copy()
            folder.mkdir(parents=True, exist_ok=True)
            trimmed.to_asdf(trimmed_path)
    return trimmed_path


def reference_overrides(pool_row, folder: Path, readout_shape: tuple[int, int]) -> dict[str, dict]:
    """Each romancal exposure step's ``override_*`` parameters from our pool row (ref_<type> columns)."""
    import roman_datamodels.datamodels as rdm

    with rdm.open(pool_row["ref_linearity"]) as linearity:
        coefficients_shape = linearity.coeffs.shape
    image_shape = tuple(size - 2 * REFERENCE_BORDER for size in readout_shape)
    flat = science_area_flat(Path(pool_row["ref_flat"]), image_shape, folder)
    overrides = {
        "dq_init": {"override_mask": pool_row["ref_mask"]},
        "saturation": {"override_saturation": pool_row["ref_saturation"]},
        # The pool lists REFPIX only where our refpix step runs (a full readout).
        "refpix": {"override_refpix": pool_row.get("ref_refpix", "N/A")},
        "linearity": {"override_linearity": pool_row["ref_linearity"],
                      "override_inverselinearity": str(identity_inverselinearity(
                          folder / "identity_inverselinearity.asdf", coefficients_shape)),
                      "override_integralnonlinearity": "N/A"},
        "rampfit": {"override_gain": pool_row["ref_gain"], "override_readnoise": pool_row["ref_readnoise"]},
        "dark_current": {"override_dark": pool_row["ref_dark"]},
        "assign_wcs": {"override_distortion": pool_row["ref_distortion"]},
        "flatfield": {"override_flat": str(flat), "include_var_flat": True},
        "photom": {"override_photom": pool_row["ref_photom"]},
    }
    if readout_shape[1] != FULL_READOUT_COLUMNS:
        overrides["refpix"] = {"skip": True}
    return overrides


def gaussian_apcorr(path: Path, optical_element: str, fwhm_pixels: float = 2.0) -> Path:
    """An APCORR for a Gaussian PSF (romancal's source catalog needs one; the romancal
    documentation defines none).

    Enclosed energy of a Gaussian within radius r: 1 - exp(-r^2 / 2 sigma^2); the catalog
    only interpolates it for its aperture corrections, which do not change what it costs.
    """
    if path.is_file():
        return path
    import roman_datamodels.datamodels as rdm

    sigma = fwhm_pixels / (2 * np.sqrt(2 * np.log(2)))
    fractions = np.linspace(0.1, 0.9, 9)
    model = rdm.ApcorrRefModel.create_fake_data()
    model.data = {optical_element: {
        "ap_corrections": 1 / fractions, "ee_fractions": fractions,
        "ee_radii": sigma * np.sqrt(-2 * np.log(1 - fractions)),
        "sky_background_rin": 3 * fwhm_pixels, "sky_background_rout": 5 * fwhm_pixels}}
    path.parent.mkdir(parents=True, exist_ok=True)
    model.to_asdf(path)
    return path


def gaussian_epsf(path: Path, readout_shape: tuple[int, int], fwhm_pixels: float = 2.0,
                  oversample: int = 4, stamp_pixels: int = 25) -> Path:
    """An ePSF reference of Gaussian stamps on a 3x3 grid over the detector (romancal's
    tweakreg needs PSF-fitted positions, so its source catalog fits PSFs and needs one).

    Axes (focus, spectral type, grid position, y, x), one focus and three spectral types
    as romancal indexes them (it takes G2V, the second); each stamp is integrated over the
    pixel and sums to ``oversample``**2, the "new style" romancal reads as is.
    """
    if path.is_file():
        return path
    import roman_datamodels.datamodels as rdm

    sigma = fwhm_pixels / (2 * np.sqrt(2 * np.log(2))) * oversample
    size = stamp_pixels * oversample + 1
    offsets = np.arange(size) - size // 2
    stamp = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    stamp *= oversample**2 / stamp.sum()
    columns = [readout_shape[1] * fraction for fraction in (1 / 6, 1 / 2, 5 / 6)]
    rows = [readout_shape[0] * fraction for fraction in (1 / 6, 1 / 2, 5 / 6)]
    model = rdm.EpsfRefModel.create_fake_data()
    model.psf = np.broadcast_to(stamp, (1, 3, 9, size, size)).astype(np.float32)
    model.meta.pixel_x = [x for _ in rows for x in columns]
    model.meta.pixel_y = [y for y in rows for _ in columns]
    model.meta.oversample = oversample
    # romancal's defaults for an image without jitter: the stamps are used as they are.
    model.meta.jitter_major, model.meta.jitter_minor, model.meta.jitter_position_angle = 8.0, 8.0, 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    model.to_asdf(path)
    return path


def refpix_runs(readout_shape: tuple[int, int]) -> bool:
    return readout_shape[1] == FULL_READOUT_COLUMNS


def exposure_pipeline_steps(pool_row, folder: Path, readout_shape, algorithm: str,
                            include_var_flat: bool = True, abs_refcat: Path | None = None) -> dict[str, dict]:
    """ExposurePipeline ``steps``: our references, ``algorithm`` for ramp fitting; source catalog and
    tweakreg against the local catalog ``abs_refcat`` when given, else skipped (Gaia is online).

    romancal 1.1 cannot save an image flat-fielded with ``include_var_flat`` (its ERR
    becomes float32 against a float16 schema): runs that write their product set it false.
    The source catalog fits PSFs (romancal's tweakreg refuses a catalog without PSF-fitted
    positions; ours by default does not fit them) with a Gaussian ePSF and APCORR
    (:func:`gaussian_epsf`, :func:`gaussian_apcorr`).
    """
    steps = reference_overrides(pool_row, folder, readout_shape)
    steps["rampfit"]["algorithm"] = algorithm
    steps["flatfield"]["include_var_flat"] = include_var_flat
    # No DARKDECAYSIGNAL in the romancal documentation.
    steps["dark_decay"] = {"skip": True}
    if abs_refcat is None:
        steps["source_catalog"] = {"skip": True}
        steps["tweakreg"] = {"skip": True}
    else:
        apcorr = gaussian_apcorr(folder / "gaussian_apcorr.asdf", pool_row["optical_element"])
        epsf = gaussian_epsf(folder / "gaussian_epsf.asdf", tuple(readout_shape))
        steps["source_catalog"] = {"override_apcorr": str(apcorr), "override_epsf": str(epsf)}
        steps["tweakreg"] = {"abs_refcat": str(abs_refcat)}
    return steps


def romancal_default_steps(pool_row, folder: Path, readout_shape, include_var_flat: bool = True,
                           abs_refcat: Path | None = None) -> dict[str, dict]:
    """ExposurePipeline ``steps`` at romancal 1.1's defaults (``likely``, dark_decay, wfi18_transient,
    linearity read by read) with the references of a run of our romancal-1.1 preset: its pool row
    lists INVERSELINEARITY, INTEGRALNONLINEARITY and DARKDECAYSIGNAL, which replace the neutral ones
    of :func:`exposure_pipeline_steps`. romancal's dark_decay reads a full frame only: on a smaller
    readout it is skipped (the comparison's campaign simulates no decay signal, so ours subtracts 0).
    """
    steps = exposure_pipeline_steps(pool_row, folder, readout_shape, "likely", include_var_flat, abs_refcat)
    steps["linearity"].update(override_inverselinearity=pool_row["ref_inverselinearity"],
                              override_integralnonlinearity=pool_row["ref_integralnonlinearity"])
    steps["dark_decay"] = ({"override_darkdecaysignal": pool_row["ref_darkdecaysignal"]}
                           if refpix_runs(readout_shape) else {"skip": True})
    return steps


def step_class(alias: str):
    import importlib

    module, name = _STEP_CLASSES[alias]
    return getattr(importlib.import_module(module), name)


def call_quietly(callable_, *args, **kwargs):
    """romancal warns about deprecated algorithms and leaves files to the garbage collector."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = callable_(*args, **kwargs)
        gc.collect()
    return result


def run_step(alias: str, dataset, **parameters):
    """romancal's step ``alias`` on a file or a model already in memory."""
    dataset = str(dataset) if isinstance(dataset, Path) else dataset
    return call_quietly(step_class(alias).call, dataset, **parameters)


def saving_to(output: Path) -> dict:
    """stpipe's own saving (romancal's writer casts to the schema's types; ``to_asdf`` would refuse)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return {"save_results": True, "output_dir": str(output.parent), "output_file": output.name}


def run_exposure_pipeline(uncal: Path, steps: dict[str, dict], **options):
    from romancal.pipeline import ExposurePipeline
    from romancal.source_catalog import SourceCatalogStep

    # romancal 1.1 asks CRDS for the ePSF but lists only APCORR among its reference types,
    # so stpipe would refuse override_epsf: listed here, the local ePSF is used.
    if "epsf" not in SourceCatalogStep.reference_file_types:
        SourceCatalogStep.reference_file_types = [*SourceCatalogStep.reference_file_types, "epsf"]

    model, _catalog, _segmentation = call_quietly(ExposurePipeline.call, str(uncal), steps=steps, **options)
    return model


# romancal 1.1's weight types; ours beyond them (ivm-smed, our resample default) run on its side as
# ivm-sky, and comparisons run ours at ivm-sky too (README, "Where we differ").
PEER_WEIGHT_TYPES = ("ivm", "ivm-sky", "exptime", None)
PEER_RESAMPLE_WEIGHT = "ivm-sky"


def mosaic_steps(our_parameters: dict[str, dict], output_wcs: Path | None) -> dict[str, dict]:
    """MosaicPipeline ``steps`` with our step parameters where romancal has the same names."""
    shared = {
        "skymatch": ("skymethod", "match_down", "subtract", "skystat", "dqbits", "nclip", "lsigma", "usigma",
                     "binwidth"),
        "outlier_detection": ("weight_type", "pixfrac", "kernel", "maskpt", "snr", "scale", "backg",
                              "good_bits", "in_memory"),
        "resample": ("pixfrac", "kernel", "weight_type", "good_bits", "in_memory"),
    }
    steps = {step: {name: our_parameters[step][name] for name in names if name in our_parameters[step]}
             for step, names in shared.items()}
    for step in ("outlier_detection", "resample"):
        if steps[step].get("weight_type") not in PEER_WEIGHT_TYPES:
            steps[step]["weight_type"] = PEER_RESAMPLE_WEIGHT
    steps["outlier_detection"].update(resample_on_skycell=False)
    steps["resample"].update(resample_on_skycell=False, fillval="NaN", pixmap_stepsize=1)
    if output_wcs is not None:
        steps["resample"]["output_wcs"] = str(output_wcs)
    steps["source_catalog"] = {"skip": True}
    return steps


def run_mosaic_pipeline(asn: Path, steps: dict[str, dict], **options):
    from romancal.pipeline import MosaicPipeline

    result = call_quietly(MosaicPipeline.call, str(asn), steps=steps, resample_on_skycell=False, **options)
    return result[0] if isinstance(result, tuple) else result


def read_pool_row(pool: Path, uncal: Path | None = None):
    """The pool row of ``uncal`` (the first without it); its file paths (``path``, ``ref_*``),
    which our pool writes relative to the run's folder (``<folder>/results/pool.csv``), made
    absolute so that they work from any working directory."""
    import pandas as pd

    table = pd.read_csv(pool, dtype=str, keep_default_na=False)
    folder = Path(pool).resolve().parent.parent
    for column in [name for name in table.columns if name == "path" or name.startswith("ref_")]:
        table[column] = table[column].map(lambda value: str(folder / value) if value else value)
    if uncal is None:
        return table.iloc[0]
    names = table["path"].map(lambda path: Path(path).name)
    return table[names == uncal.name].iloc[0]


def readout_shape_of(uncal: Path) -> tuple[int, int]:
    import roman_datamodels as rdm

    with rdm.open(uncal) as model:
        return tuple(model.data.shape[-2:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exposure = commands.add_parser("exposure", help="ExposurePipeline on a Level 1 file")
    exposure.add_argument("uncal", type=Path)
    exposure.add_argument("output", type=Path)
    exposure.add_argument("--pool", type=Path, required=True, help="our pool.csv (reference files)")
    exposure.add_argument("--algorithm", default="ols_cas22")
    exposure.add_argument("--abs-refcat", type=Path,
                          help="run source_catalog and tweakreg against this catalog file")
    exposure.add_argument("--romancal-default", action="store_true",
                          help="romancal 1.1's default steps with the references of a run of our "
                               "romancal-1.1 preset (its pool.csv); --algorithm is then likely")
    step = commands.add_parser("step", help="one ExposurePipeline step on a file, result to a file")
    step.add_argument("alias", choices=list(EXPOSURE_STEPS))
    step.add_argument("input", type=Path)
    step.add_argument("output", type=Path)
    step.add_argument("--pool", type=Path, required=True, help="our pool.csv (reference files)")
    step.add_argument("--uncal", type=Path, required=True, help="the exposure's Level 1 file")
    step.add_argument("--algorithm", default="ols_cas22")
    mosaic = commands.add_parser("mosaic", help="MosaicPipeline on an association of _cal files")
    mosaic.add_argument("asn", type=Path)
    mosaic.add_argument("output", type=Path)
    mosaic.add_argument("--output-wcs", type=Path)
    args = parser.parse_args(argv)

    scratch = args.output.parent / f".{args.output.stem}.stpipe"
    shutil.rmtree(scratch, ignore_errors=True)
    saving = saving_to(scratch / args.output.name)
    if args.command in ("exposure", "step"):
        row = read_pool_row(args.pool, args.uncal)
        configure_environment(Path(row["ref_mask"]).parents[3])
        references, readout = args.output.parent / "peer_references", readout_shape_of(args.uncal)
        refcat = getattr(args, "abs_refcat", None)
        if getattr(args, "romancal_default", False):
            steps = romancal_default_steps(row, references, readout, include_var_flat=False,
                                           abs_refcat=refcat)
        else:
            steps = exposure_pipeline_steps(row, references, readout, args.algorithm, include_var_flat=False,
                                            abs_refcat=refcat)
        if args.command == "exposure":
            run_exposure_pipeline(args.uncal, steps, **saving)
        else:
            model = run_step(args.alias, args.input, **steps[args.alias])
            # A ramp-fitted image has no WCS until assign_wcs; romancal's schema wants the key.
            if "wcs" not in model.meta and args.alias in ("rampfit", "dark_current"):
                model.meta["wcs"] = None
            scratch.mkdir(parents=True, exist_ok=True)
            model.save(scratch / args.output.name)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
        from romanpipe.params import step_defaults

        configure_environment(os.environ.get("CRDS_PATH", args.asn.parent))
        parameters = {step: step_defaults(step) for step in ("skymatch", "outlier_detection", "resample")}
        run_mosaic_pipeline(args.asn, mosaic_steps(parameters, args.output_wcs), **saving)
    # stpipe names the file after its input and suffix: the largest file it wrote is the product.
    max(scratch.glob("*.asdf"), key=lambda path: path.stat().st_size).replace(args.output)
    shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
