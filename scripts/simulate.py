"""simulate: make Level 1 WFI exposures, their truth, reference files and an offline CRDS cache.

    python scripts/simulate.py campaign --config config/demo_campaign.yaml --out demo
    python scripts/simulate.py exposure --out sim --detector WFI01 --filter F158 --size 64 \\
        --ma-table IMG_UNEVEN_6 --seed 1
    python scripts/simulate.py groundtest --config config/groundtest_campaign.yaml --out tvac

The first two write <out>/uncal, <out>/truth, <out>/catalogs (the Gaia-like catalog), <out>/references,
<out>/crds_cache and <out>/workflow.yaml (the workflow then runs with ``--directory <out>``).
``groundtest`` writes TVAC-like TvacModel exposures (one bright-star exposure and darks) with their
truth in <out>/uncal, and <out>/references, <out>/crds_cache and <out>/workflow.yaml for the
TVAC tutorial's partial pipeline (dq_init to linearity, see config/groundtest.yaml).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from romanpipe import cli

from wfisim.campaign import CampaignConfig, simulate_campaign
from wfisim.groundtest import GroundTestConfig, simulate_groundtest
from wfisim.matables import MA_TABLES
from wfisim.psf import PSF_MODELS

log = logging.getLogger("simulate")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simulate.py", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, required=True, help="output folder")
    common.add_argument("--workers", type=int, default=None,
                        help="threads simulating row chunks (default: all cores; "
                             "the output does not depend on it)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="log DEBUG messages")
    common.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)

    campaign = commands.add_parser("campaign", parents=[common], help="a campaign from a YAML config")
    campaign.add_argument("--config", type=Path, required=True,
                          help="campaign YAML (see config/demo_campaign.yaml)")

    defaults = CampaignConfig()
    exposure = commands.add_parser("exposure", parents=[common], help="one exposure of one detector")
    exposure.add_argument("--detector", default=defaults.detectors[0], help="WFI01 ... WFI18")
    exposure.add_argument("--filter", default=defaults.filters[0], help="optical element, e.g. F158")
    exposure.add_argument("--size", type=int, default=defaults.size,
                          help="rows = columns of the readout, reference border included (4096: full frame)")
    exposure.add_argument("--ma-table", default=defaults.ma_table,
                          help=f"{', '.join(MA_TABLES)} or EVEN_<N>")
    exposure.add_argument("--seed", type=int, default=defaults.seed)
    exposure.add_argument("--stars", type=int, default=defaults.stars)
    exposure.add_argument("--saturating-stars", type=int, default=defaults.saturating_stars)
    exposure.add_argument("--sky", type=float, default=defaults.sky_e_per_s, help="sky level (e/s per pixel)")
    exposure.add_argument("--start-time", default=defaults.start_time, help="UTC, ISO format")
    exposure.add_argument("--cosmic-ray-flux", type=float, default=defaults.cosmic_ray_flux_per_cm2_s,
                          help="cosmic rays per cm^2 per s (about 5 at L2; 0: none)")
    exposure.add_argument("--psf", choices=PSF_MODELS, default=defaults.psf,
                          help="gaussian, or roman: GalSim's Roman optical PSF of the detector and filter")

    groundtest = commands.add_parser("groundtest", parents=[common],
                                     help="ground-test (TVAC) exposures: a bright-star scene and darks")
    groundtest.add_argument("--config", type=Path, default=None,
                            help="ground-test YAML (see config/groundtest_campaign.yaml; default: "
                                 "the GroundTestConfig defaults)")
    groundtest.add_argument("--size", type=int, default=None,
                            help="readout rows = columns instead of the config's (e.g. 128 for a quick look)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    if args.command == "groundtest":
        settings = GroundTestConfig.from_yaml(args.config) if args.config else GroundTestConfig()
        if args.size is not None:
            settings = dataclasses.replace(settings, size=args.size)
        simulate_groundtest(settings, args.out, workers=args.workers)
        log.info("wrote the ground-test set to %s; run the workflow with --directory %s --configfile %s",
                 args.out / "uncal", args.out, args.out / "workflow.yaml")
        return
    if args.command == "campaign":
        config = CampaignConfig.from_yaml(args.config)
    else:
        config = CampaignConfig(
            detectors=[args.detector.upper()], filters=[args.filter.upper()], size=args.size,
            ma_table=args.ma_table, seed=args.seed, stars=args.stars,
            saturating_stars=args.saturating_stars, sky_e_per_s=args.sky, start_time=args.start_time,
            cosmic_ray_flux_per_cm2_s=args.cosmic_ray_flux, psf=args.psf)
    outputs = simulate_campaign(config, args.out, workers=args.workers)
    log.info("wrote %d exposures to %s; run the workflow with --directory %s --configfile %s",
             len(outputs.uncal), args.out / "uncal", args.out, outputs.workflow_config)


if __name__ == "__main__":
    cli.run_and_exit(main)
