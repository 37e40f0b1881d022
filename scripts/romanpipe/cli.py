"""The thin command-line layer every step script shares: logging and exit statuses."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from .errors import (
    EXIT_ERROR,
    EXIT_NO_SCIENCE_DATA,
    EXIT_SUCCESS,
    NoScienceDataError,
    PipelineError,
)

log = logging.getLogger(__name__)

_HANDLER_NAME = "romanpipe"
_FORMAT = "%(asctime)s.%(msecs)03dZ %(name)s %(levelname)s %(message)s"


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """INFO by default, DEBUG with ``--verbose``, WARNING with ``--quiet``; UTC timestamps."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    formatter = logging.Formatter(_FORMAT, "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler: calling this twice must not log every line twice.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(level)
    # Third-party libraries stay at WARNING unless we debug.
    for noisy in ("asdf", "CRDS", "crds", "matplotlib", "numba", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main`` and map its outcome to the exit statuses of the romancal documentation,
    section "Exit Status".

    Expected failures print one line naming the file and the problem; an
    unexpected exception also prints one line, with the traceback at DEBUG.
    """
    try:
        main(argv)
    except NoScienceDataError as err:
        log.error("no science data: %s", err)
        return EXIT_NO_SCIENCE_DATA
    except PipelineError as err:
        log.error("%s", err)
        return EXIT_ERROR
    except SystemExit as err:  # argparse: --help exits 0, a bad flag exits 2
        return EXIT_SUCCESS if not err.code else EXIT_ERROR
    except Exception as err:  # noqa: BLE001 - last line of defence, still one line
        log.debug("traceback", exc_info=True)
        log.error("%s: %s", type(err).__name__, err)
        return EXIT_ERROR
    return EXIT_SUCCESS


def run_and_exit(main: Callable[[Sequence[str] | None], None]) -> NoReturn:
    """A script's ``__main__``: :func:`run` ``main``, flush the logs and streams, and end the process.

    The interpreter's own teardown (freeing every module and every array, 0.4-0.6 CPU
    seconds for a step at full size) is skipped: by then the product is complete under
    its final name (written atomically) and nothing is left to save. Library ``atexit``
    handlers are skipped with it; logging's, the one that matters, runs here.
    """
    status = run(main)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
