"""Deliver reference files into a local CRDS cache under a new context; print its name.

    python scripts/crds_deliver.py CACHE_DIR FILE [FILE ...] [--description TEXT]
"""

import argparse
import sys

from romanpipe import cli
from romanpipe.crds_cache import deliver


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache_dir", help="CRDS cache directory (created on the first delivery)")
    parser.add_argument("files", nargs="+",
                        help="reference files; one not named roman_wfi_<reftype>_<NNNN>.asdf is "
                             "delivered under the next free serial of its reftype")
    parser.add_argument("--description", default="", help="what this delivery changes")
    args = parser.parse_args(argv)
    cli.setup_logging()
    sys.stdout.write(deliver(args.cache_dir, args.files, description=args.description) + "\n")


if __name__ == "__main__":
    cli.run_and_exit(main)
