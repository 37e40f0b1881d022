"""warm_start: run a script in a warm worker (its libraries already imported), or plainly.

    python scripts/warm_start.py SCRIPT [ARGS...]

is ``python SCRIPT [ARGS...]`` with the same streams, exit status and products; with
``ROMANPIPE_WARM_DIR`` set (the workflow sets it) the script runs in a process forked from a
server that has imported the libraries once for the run (:mod:`romanpipe.warm`).
``--serve FOLDER SCRIPT_DIR`` is how a client starts that server.
"""

import importlib.util
import os
import sys

# romanpipe.warm loaded by its path: the package's __init__ (yaml) is not the client's to pay.
_spec = importlib.util.spec_from_file_location(
    "romanpipe_warm", os.path.join(os.path.dirname(os.path.abspath(__file__)), "romanpipe", "warm.py"))
warm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(warm)

if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"] and len(sys.argv) == 4:
        warm.serve(sys.argv[2], sys.argv[3])
    warm.client_main(sys.argv[1:])
