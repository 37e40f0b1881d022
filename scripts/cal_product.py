"""cal_product: write an exposure's calibrated Level 2 product, ``<exposure>_cal.asdf``.

The last step that applies to the exposure's type made the input (tweakreg for
imaging, assign_wcs for spectroscopic and calibration exposures); the steps of the
full chain that do not apply to that type are recorded as SKIPPED in cal_step, as
romancal's ExposurePipeline records them. Data are not changed.

    python scripts/cal_product.py r..._tweakreg.asdf r..._cal.asdf [--mark-skipped STEP ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from romanpipe import cli
from romanpipe.products import SKIPPED, open_model, set_cal_step, write_atomic
from romanpipe.timing import PhaseTimer

from roman_datamodels import datamodels

log = logging.getLogger("cal_product")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="cal_product.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="last product of the exposure's chain")
    parser.add_argument("output", type=Path, help="the _cal product (written atomically)")
    parser.add_argument("--mark-skipped", nargs="+", default=[], metavar="STEP",
                        help="steps that do not apply to this exposure type")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    timer = PhaseTimer()
    with timer.phase("read"):
        model = open_model(args.input, (datamodels.ImageModel,))
    with model:
        for step in args.mark_skipped:
            set_cal_step(model, step, SKIPPED)
        with timer.phase("write"):
            write_atomic(model, args.output)
    timer.log("cal")
    log.info("%s (%s) calibrated: %s", args.output.name, model.meta.exposure.type, args.input.name)


if __name__ == "__main__":
    cli.run_and_exit(main)
