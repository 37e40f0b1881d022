"""asn_from_list: make an association from a list of files (the romancal documentation's command).

The romancal documentation, section "asn_from_list".

    python scripts/asn_from_list.py -o detector_asn.json \\
        --product-name r0000101001001001001_01101_0001_WFI_cal.asdf data/*_cal.asdf

Members are written as given (relative to where the association is read from),
each a ``science`` member; the rule is the Level 2 rule ``DMS_ELPP_Base`` (the romancal documentation,
section "Level2 Associations").
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from romanpipe import cli
from romanpipe.association import LEVEL2_RULE, asn_from_list, write_association

log = logging.getLogger("asn_from_list")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="asn_from_list", description=__doc__.split("\n\n")[0])
    parser.add_argument("items", nargs="+", help="member files")
    parser.add_argument("-o", "--output-file", type=Path, required=True, help="association to write")
    parser.add_argument("--product-name", required=True, help="name of the product the members make")
    parser.add_argument("-r", "--rule", default=LEVEL2_RULE, help="association rule [%(default)s]")
    parser.add_argument("--asn-id", default="a3001", help="association id [%(default)s]")
    parser.add_argument("--program", default="noprogram", help="program [%(default)s]")
    parser.add_argument("--target", default="none", help="target [%(default)s]")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    try:
        tree = asn_from_list(args.items, args.product_name, rule=args.rule, asn_id=args.asn_id,
                             program=args.program, target=args.target)
    except ValueError as err:
        parser.error(str(err))
    write_association(tree, args.output_file)
    log.info("wrote %s with %d members", args.output_file, len(args.items))


if __name__ == "__main__":
    cli.run_and_exit(main)
