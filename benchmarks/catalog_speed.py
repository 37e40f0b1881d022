"""Our source_catalog against romancal 1.1's SourceCatalogStep on the same full-detector ``_cal``.

The input, made once and reused (:func:`make_input`): a WFI01 F158 ``_cal`` (4088 x 4088 pixels
for a full 4096-pixel readout) of
``stars`` stars (log-uniform from 30 to 30 000 e/s) drawn by the simulator with its Roman PSF
(``wfisim.psf.render_stars``) on a sky of 1 e/s, with Poisson and read noise of a 140 s
exposure, the simulator's WCS (its distortion and pointing, through assign_wcs.build_wcs) and
photometry; beside it the simulator's EPSF and APCORR references of WFI01 F158 (what the pool
selects for such an image).

Each side runs in its own process under ``/usr/bin/time -v``, alternately ``repeat`` times,
with ``fit_psf`` and the same detection parameters (ours, the workflow's defaults: romancal's
own, 25 pixels above 3 sigma without deblending, miss most faint stars at Roman's sampling):
ours ``scripts/source_catalog.py`` with the references as overrides; romancal's step through
this script's ``romancal`` command (its ``process``, as the parity test runs it: no CRDS
server for its parameters, its dust maps or its context), with a Gaussian ePSF on a 3 x 3
grid (``peer.gaussian_epsf``: romancal 1.1 builds a gridded PSF model, which our one-position
EPSF is not) and our APCORR. ``bench.py`` adds the table to ``make bench``; by hand::

    python benchmarks/catalog_speed.py table --out bench --stars 3000 --repeat 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "scripts"))

import peer  # noqa: E402
from measure import cpu_seconds, markdown_table, run_measured  # noqa: E402

DETECTOR, FILTER = "WFI01", "F158"
BORDER = 4  # reference pixels around the readout, not in a _cal
EXPOSURE_TIME_S = 140.0
READ_NOISE_DN = 5.0  # per pixel of the rate image x exposure time
SKY_E_PER_S = 1.0
STAR_FLUX_E_PER_S = (30.0, 30000.0)
EXPOSURE_NAME = "r0000101001001001001_01101_0001_WFI01"
# Our defaults, given to romancal too: the same sources on both sides.
DETECTION = {"snr_threshold": 2.0, "npixels": 5, "deblend": True}


def make_input(folder: Path, size: int, stars: int, seed: int = 2027) -> dict[str, Path]:
    """The ``_cal`` of a ``size``-pixel readout and its EPSF and APCORR references in ``folder``
    (made once: reused when present)."""
    paths = {"cal": folder / f"{EXPOSURE_NAME}_cal.asdf", "epsf": folder / "roman_wfi_epsf_0001.asdf",
             "apcorr": folder / "roman_wfi_apcorr_0001.asdf"}
    if all(path.is_file() for path in paths.values()):
        return paths
    from roman_datamodels import datamodels

    from assign_wcs import build_wcs
    from wfisim.detector import build_detector
    from wfisim.photometry import PIXEL_AREA_SR, photmjsr
    from wfisim.pointing import DetectorGeometry, Pointing
    from wfisim.psf import render_stars
    from wfisim.references import make_reference
    from wfisim.scene import Catalog

    folder.mkdir(parents=True, exist_ok=True)
    shape = (size - 2 * BORDER,) * 2
    rng = np.random.default_rng(seed)
    x, y = (rng.uniform(-0.5, shape[0] - 0.5, stars) for _ in range(2))
    flux = np.exp(rng.uniform(*np.log(STAR_FLUX_E_PER_S), stars))
    detector = build_detector(DETECTOR, (64, 64), seed)  # the references need only its name
    gain = float(detector.nominal_gain)
    rate = render_stars(shape, Catalog(x, y, flux), SKY_E_PER_S, FILTER, detector=DETECTOR, psf="roman")
    # The spline-sampled PSF rings slightly below zero far out in bright stars' wings.
    electrons = rng.poisson(np.maximum(rate, 0.0) * EXPOSURE_TIME_S).astype(np.float64)
    del rate
    electrons += rng.normal(0.0, READ_NOISE_DN * gain, shape)
    data = (electrons / EXPOSURE_TIME_S / gain).astype(np.float32)  # DN/s
    err = np.sqrt(np.maximum(data, 0) / (EXPOSURE_TIME_S * gain) + (READ_NOISE_DN / EXPOSURE_TIME_S) ** 2)

    image = datamodels.ImageModel.create_fake_data(shape=shape)
    image.data = data
    image.err = err.astype(image.err.dtype)
    image.dq = np.zeros(shape, np.uint32)
    image.meta.instrument.detector, image.meta.instrument.optical_element = DETECTOR, FILTER
    image.meta.photometry.conversion_megajanskys = photmjsr(FILTER, gain)
    image.meta.photometry.pixel_area = PIXEL_AREA_SR
    geometry = DetectorGeometry(DETECTOR, (size, size), Pointing.at(270.0, 66.0, 30.0))
    image.meta.wcsinfo.update(geometry.wcsinfo())
    image.meta.wcs = build_wcs(geometry.distortion, image.meta.wcsinfo, shape)
    image.meta.filename = paths["cal"].name
    image.to_asdf(paths["cal"])
    useafter = "2027-01-01T00:00:00"
    make_reference("epsf", detector, useafter=useafter, optical_element=FILTER).to_asdf(paths["epsf"])
    make_reference("apcorr", detector, useafter=useafter, row_elements=[FILTER]).to_asdf(paths["apcorr"])
    return paths


def run_romancal(cal: Path, output: Path, apcorr: Path, epsf: Path) -> None:
    """romancal 1.1's SourceCatalogStep on ``cal`` with :data:`DETECTION` and ``fit_psf``; its catalog
    to ``output`` (Parquet)."""
    from romanpipe.products import set_cal_step

    from roman_datamodels import datamodels
    from romancal.source_catalog import _source_catalog
    from romancal.source_catalog.source_catalog_step import SourceCatalogStep
    from stpipe import crds_client

    def no_dust_map(*args, **kwargs):
        raise LookupError("no CRDS server: no dust map")

    # Without a CRDS server romancal writes dust_ebv NaN (as we do) and records no context.
    _source_catalog.getreferences = no_dust_map
    crds_client.get_context_used = lambda observatory: "N/A"
    if "epsf" not in SourceCatalogStep.reference_file_types:  # 1.1 asks for it without listing it
        SourceCatalogStep.reference_file_types = [*SourceCatalogStep.reference_file_types, "epsf"]
    with datamodels.open(cal) as image:
        set_cal_step(image, "tweakreg", "COMPLETE")  # a real _cal has cal_step, which romancal updates
        catalog, _segmentation = peer.call_quietly(
            SourceCatalogStep(override_apcorr=str(apcorr), override_epsf=str(epsf), fit_psf=True,
                              kernel_fwhm=default_kernel_fwhm(), **DETECTION).process, image)
    catalog.source_catalog.to_pandas().to_parquet(output)


def default_kernel_fwhm() -> float:
    from romanpipe.roman_psf import default_kernel_fwhm as kernel_fwhm

    return kernel_fwhm(FILTER)


def rows_of(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def catalog_table(out: Path, size: int, stars: int, repeat: int, env: dict[str, str]) -> str:
    """The markdown section: wall, CPU, peak RSS and sources found, each side's fastest run (its
    files in ``out/catalog_<size>_<stars>``)."""
    folder = (out / f"catalog_{size}_{stars}").resolve()
    inputs = make_input(folder, size, stars)
    romancal_epsf = peer.gaussian_epsf(folder / "gaussian_epsf.asdf", (size, size))
    commands = {
        "ours (scripts/source_catalog.py)": (
            [sys.executable, str(ROOT / "scripts" / "source_catalog.py"), str(inputs["cal"]),
             str(folder / "ours" / f"{EXPOSURE_NAME}_cat.parquet"), "--override-epsf", str(inputs["epsf"]),
             "--override-apcorr", str(inputs["apcorr"])], folder / "ours" / f"{EXPOSURE_NAME}_cat.parquet"),
        "romancal 1.1 SourceCatalogStep": (
            [sys.executable, str(Path(__file__).resolve()), "romancal", str(inputs["cal"]),
             str(folder / "romancal_cat.parquet"), "--apcorr", str(inputs["apcorr"]),
             "--epsf", str(romancal_epsf)],
            folder / "romancal_cat.parquet"),
    }
    (folder / "ours").mkdir(exist_ok=True)
    runs = {label: [] for label in commands}
    for _ in range(repeat):
        for label, (command, _output) in commands.items():
            runs[label].append(run_measured(command, env, log=folder / f"{label.split()[0]}.log"))
    rows = []
    for label, (_command, output) in commands.items():
        fastest = min(runs[label], key=lambda figures: figures["wall_s"])
        rows.append([label, f"{fastest['wall_s']:.1f}", f"{cpu_seconds(fastest):.1f}",
                     f"{fastest['max_rss_kb'] / 1024**2:.2f}", f"{rows_of(output)}"])
    return "".join([
        f"\n## Source catalog of a _cal ({size - 2 * BORDER}² pixels, {stars} stars drawn with the "
        f"Roman PSF, fit_psf, snr_threshold {DETECTION['snr_threshold']}, npixels {DETECTION['npixels']}, "
        f"deblend; fastest of {repeat}; `benchmarks/catalog_speed.py`)\n\n",
        markdown_table(["run", "wall (s)", "CPU (s)", "peak RSS (GB)", "sources"], rows)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser("table", help="make the input (once) and time both sides")
    table.add_argument("--out", type=Path, default=Path("bench"))
    table.add_argument("--size", type=int, default=4096, help="readout rows = columns (4096: full detector)")
    table.add_argument("--stars", type=int, default=3000)
    table.add_argument("--repeat", type=int, default=1)
    romancal = commands.add_parser("romancal", help="romancal's SourceCatalogStep on a _cal")
    romancal.add_argument("cal", type=Path)
    romancal.add_argument("output", type=Path)
    romancal.add_argument("--apcorr", type=Path, required=True)
    romancal.add_argument("--epsf", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "romancal":
        run_romancal(args.cal, args.output, args.apcorr, args.epsf)
        return 0
    from measure import clean_environment

    text = catalog_table(args.out, args.size, args.stars, args.repeat, clean_environment())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
