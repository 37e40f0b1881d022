"""Warm start: step scripts run in a process forked from a server that has already imported
the libraries, instead of a new interpreter that imports them again in every job.

The rules run ``python scripts/warm_start.py SCRIPT ARGS...``, a thin client (the standard
library only). With ``ROMANPIPE_WARM_DIR`` naming a folder (the workflow's shell prefix sets
``results/.cache/warm``) it asks that folder's server for a worker (the server's lock and
log are in the folder, its socket in ``$TMPDIR/romanpipe-warm-<uid>/``, private to the user); when there is no
usable server it starts one in the background for the next jobs and becomes ``python SCRIPT
ARGS...`` itself (``exec``: the same process, streams and exit status as before). So a
broken, busy, missing or stale server costs a job its warm start, never its result. A job
that finds its server still importing (the lock held, no socket yet) waits for it up to the
handshake timeout, and starts plainly as soon as the lock is free.

What a job keeps when it runs warm:

- The script is read and run fresh in every worker (``runpy``, as ``__main__``, its folder
  first on ``sys.path``); only the libraries are imported ahead. A server serves one
  interpreter, one scripts folder and one exact environment (the socket's name is a hash of
  the three: a job with other thread counts, another conda env or another run's code
  revision gets its own server); before each job it checks that no file of a module it has
  imported changed since it imported it, and otherwise refuses the job and exits.
- The worker gets the client's stdin, stdout and stderr (passed over the socket), working
  directory, umask, environment and arguments; its exit status, or the signal that ended
  it, becomes the client's.
- The worker lives exactly as long as its client: a watchdog process per job (the worker's
  parent) holds the client's connection and kills the worker's process group as soon as
  the connection drops (the client killed with SIGKILL, Snakemake cancelling the job). If
  the watchdog itself is killed, the worker dies with it (``PR_SET_PDEATHSIG``), the
  client kills what is left of the worker's process group and fails the job.
- A server stops when its lock file (``<key>.lock``) is removed, after 60 s without a job,
  or when a file of its modules changed.
- Under SLURM (``SLURM_JOB_ID`` set) jobs never start or use a server: each job is alone in
  its allocation, and a server would outlive none of them.

What Snakemake does not see: a rule's ``benchmark:`` record measures the client (its wall
time is the job's; its CPU and memory are not). The server's log (``<key>.log`` in the
folder) has one line per job with the worker's CPU seconds and peak memory and the job's
log file; ``benchmark_table.py`` puts them into the report's table (:func:`worker_records`)
and ``make bench`` adds them up.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time

WARM_DIR_ENV = "ROMANPIPE_WARM_DIR"
# Seconds a client waits for a server to take its job before it runs the job itself.
HANDSHAKE_TIMEOUT = 10.0
# A server with no job for this long exits (a run's jobs follow each other within seconds).
IDLE_TIMEOUT = 60.0
# What a server imports before it listens: the libraries of the step scripts, then one Roman
# file written and read (asdf loads its extensions and roman_datamodels its schemas once).
# Not crds: a crds imported ahead and configured again in the job fails to select offline
# (its configuration is read partly at import, partly at first use; test_warm checks it).
PRELOAD = ("romanpipe", "numpy", "scipy.ndimage", "scipy.optimize", "asdf", "astropy.units", "gwcs",
           "astropy.table", "astropy.coordinates", "roman_datamodels.datamodels", "romanpipe.steprun",
           "romanpipe.products", "pandas", "numba", "rampfit_kernels.cas22",
           "rampfit_kernels.likely", "rampfit_kernels.ols", "photutils.background",
           "photutils.detection", "tweakwcs")
# Set by the shell for each command, read by no library: not part of a server's key.
SHELL_VARIABLES = ("_", "OLDPWD", "SHLVL")
# AF_UNIX socket paths are at most 107 bytes.
_MAX_SOCKET_PATH = 100
_READY, _GO = b"R", b"G"
_LENGTH = struct.Struct("!I")


def server_key(script_dir: str, environ: dict[str, str]) -> str:
    """Which server may run a job: the interpreter, the scripts folder and the environment."""
    digest = hashlib.sha256()
    for part in (os.path.realpath(sys.executable), os.path.realpath(script_dir),
                 *(f"{name}={value}" for name, value in sorted(environ.items())
                   if name not in SHELL_VARIABLES)):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()[:20]


def server_paths(folder: str, key: str) -> dict[str, str] | None:
    """The lock and log of server ``key`` in ``folder``, and its socket in this user's private
    folder of the temporary directory (not in ``folder``: a campaign copied with its results
    cannot copy a socket). None when that private folder is not safely ours."""
    private = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"romanpipe-warm-{os.getuid()}")
    try:
        os.makedirs(private, mode=0o700, exist_ok=True)
        status = os.lstat(private)
    except OSError:
        return None
    if status.st_uid != os.getuid() or status.st_mode & 0o077 or not os.path.isdir(private):
        return None  # another user's folder, or open to others: their socket could pose as ours
    folder = os.path.realpath(folder)
    name = hashlib.sha256(f"{folder}\0{key}".encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return {"sock": os.path.join(private, f"{name}.sock"),
            "lock": os.path.join(folder, f"{key}.lock"), "log": os.path.join(folder, f"{key}.log")}


# ---------------------------------------------------------------------------------------
# Client


def client_main(argv: list[str]) -> None:
    """``warm_start.py SCRIPT ARGS...``: the job in a warm worker if a server takes it, else by
    ``exec`` of ``python SCRIPT ARGS...``. Never returns."""
    if not argv or argv[0].startswith("-"):
        sys.stderr.write("usage: warm_start.py SCRIPT [ARGS...]  (or --serve FOLDER SCRIPT_DIR)\n")
        os._exit(2)
    script = argv[0]
    folder = os.environ.get(WARM_DIR_ENV, "")
    if folder and "SLURM_JOB_ID" not in os.environ and os.path.isfile(script):
        status = run_warm(folder, script, argv[1:])
        if status is not None:
            end_as(status)
    os.execv(sys.executable, [sys.executable, script, *argv[1:]])


def run_warm(folder: str, script: str, args: list[str], timeout: float = HANDSHAKE_TIMEOUT) -> dict | None:
    """Run ``script`` in a worker of the server for this job; its status, or None when no
    server took the job (one is then started for the next jobs)."""
    script_dir = os.path.dirname(os.path.abspath(script))
    paths = server_paths(folder, server_key(script_dir, dict(os.environ)))
    if paths is None or len(paths["sock"]) > _MAX_SOCKET_PATH:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(timeout)
        if not connect_to_server(connection, paths, timeout):
            start_server(folder, paths, script_dir)
            return None
        if _peer_uid(connection) != os.getuid():
            return None
        request = json.dumps({"script": os.path.abspath(script), "args": args, "cwd": os.getcwd(),
                              "env": dict(os.environ), "umask": current_umask(),
                              "log": job_log()}).encode()
        try:
            socket.send_fds(connection, [_LENGTH.pack(len(request)) + request], [0, 1, 2])
            if _receive_exactly(connection, 1) != _READY:
                return None
            connection.sendall(_GO)
        except OSError:
            return None
        # From here the job is the worker's: wait for its end however long it takes.
        connection.settimeout(None)
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        worker = None
        try:
            worker = json.loads(_receive_message(connection))["worker"]
            return json.loads(_receive_message(connection))
        except (OSError, ValueError, KeyError):
            # The watchdog went without a word: take the worker's process group down ourselves.
            if worker:
                with contextlib.suppress(OSError):
                    os.killpg(worker, signal.SIGKILL)
            return {"lost": True}
    finally:
        connection.close()


def connect_to_server(connection: socket.socket, paths: dict[str, str], timeout: float) -> bool:
    """Connect to this job's server. One that is still starting (its lock held, no socket
    yet: it is importing) is waited for up to ``timeout`` seconds, so the jobs that start
    in a run's first seconds run warm instead of importing everything a second time; the
    wait ends as soon as the lock is free (the server died)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.connect(paths["sock"])
            return True
        except OSError:
            if time.monotonic() > deadline or not server_starting(paths["lock"]):
                return False
        time.sleep(0.05)


def server_starting(lock_path: str) -> bool:
    """Whether a server holds this lock (it takes it before it imports and holds it while it
    serves). Read from /proc/locks: trying the lock would make a server that is taking it
    at that moment fail to and leave."""
    try:
        status = os.stat(lock_path)
        with open("/proc/locks") as locks:
            held = locks.read()
    except OSError:
        return False
    lock_id = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    return any("FLOCK" in line and lock_id in line.split() for line in held.splitlines())


def end_as(status: dict) -> None:
    """End this process as the worker ended: its exit status, or killed by its signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if "signal" in status:
        signal.signal(status["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), status["signal"])
    if status.get("lost"):
        sys.stderr.write("warm_start: the worker running this job was lost (its server's "
                         "watchdog was killed)\n")
        os._exit(1)
    os._exit(status.get("exit", 1))


def job_log() -> str | None:
    """The file this job's stderr goes to (the rule's log), which the server's log names."""
    path = os.path.realpath("/proc/self/fd/2")
    return path if os.path.isfile(path) else None


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def start_server(folder: str, paths: dict[str, str], script_dir: str) -> None:
    """Start a server for this job's key in the background, unless one holds the lock (starting)."""
    import subprocess

    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with open(paths["lock"], "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(lock, fcntl.LOCK_UN)
        client = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "warm_start.py")
        with open(paths["log"], "ab") as log:
            # The server detaches itself at once (double fork): this waits a few milliseconds.
            subprocess.run([sys.executable, client, "--serve", os.path.abspath(folder), script_dir],
                           stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=HANDSHAKE_TIMEOUT,
                           check=False)
    except (OSError, subprocess.SubprocessError):
        pass  # no warm start for the next jobs either; each runs as a plain process


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _receive_message(connection: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(_receive_exactly(connection, _LENGTH.size))
    return _receive_exactly(connection, length)


def _send_message(connection: socket.socket, payload: dict) -> None:
    data = json.dumps(payload).encode()
    connection.sendall(_LENGTH.pack(len(data)) + data)


# ---------------------------------------------------------------------------------------
# Server


def module_files() -> dict[str, tuple[int, int]]:
    """The file of every imported module, with its modification time (ns) and size."""
    files = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path not in files:
            with contextlib.suppress(OSError):
                status = os.stat(path)
                files[path] = (status.st_mtime_ns, status.st_size)
    return files


def changed_modules(imported: dict[str, tuple[int, int]]) -> list[str]:
    """The files among ``imported`` that changed or went since they were recorded."""
    changed = []
    for path, (mtime_ns, size) in imported.items():
        try:
            status = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if (status.st_mtime_ns, status.st_size) != (mtime_ns, size):
            changed.append(path)
    return changed


def serve(folder: str, script_dir: str) -> None:
    """The server: detach, take the lock (or leave: another server has it), import, serve."""
    if os.fork():
        os._exit(0)
    os.setsid()
    os.chdir("/")  # the server holds no working directory; each worker takes its job's
    paths = server_paths(folder, server_key(script_dir, dict(os.environ)))
    if paths is None:
        os._exit(0)
    lock = open(paths["lock"], "a")  # noqa: SIM115 - held for the server's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os._exit(0)
    locked = os.fstat(lock.fileno()).st_ino
    started = time.perf_counter()
    sys.path.insert(0, script_dir)
    _preload()
    imported = module_files()
    _note(f"server {os.getpid()} ready in {time.perf_counter() - started:.2f} s, "
          f"{len(imported)} module files")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths["sock"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(paths["sock"])
    os.chmod(paths["sock"], 0o600)
    bound = os.stat(paths["sock"]).st_ino
    listener.listen(16)
    listener.settimeout(1.0)
    watchdogs: set[int] = set()
    last_activity = time.monotonic()
    while True:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            if _reap(watchdogs):
                last_activity = time.monotonic()
            # Stopped by removing its lock file (or the folder with it), or idle.
            if not _same_file(paths["sock"], bound) or not _same_file(paths["lock"], locked) or (
                    not watchdogs and time.monotonic() - last_activity > IDLE_TIMEOUT):
                break
            continue
        last_activity = time.monotonic()
        _reap(watchdogs)
        changed = changed_modules(imported)
        if _peer_uid(connection) != os.getuid() or changed:
            connection.close()
            if changed:
                _note(f"server {os.getpid()}: {changed[0]} changed since it was imported; exiting")
                break
            continue
        watchdog = os.fork()
        if watchdog == 0:
            listener.close()
            lock.close()  # the lock stays the server's alone (a job may outlive it)
            _watch_job(connection, paths["log"], script_dir)
        watchdogs.add(watchdog)
        connection.close()
    with contextlib.suppress(OSError):
        if _same_file(paths["sock"], bound):
            os.unlink(paths["sock"])
    _reap(watchdogs)
    usage = os.times()
    # What make bench adds to a run's CPU: the server's own, and that of the jobs it ran.
    _note(f"server {os.getpid()} exits: " + json.dumps({
        "server_cpu": round(usage.user + usage.system, 3),
        "jobs_cpu": round(usage.children_user + usage.children_system, 3)}))
    os._exit(0)


def _preload() -> None:
    import importlib
    import tempfile

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a library missing here is imported by the job
            _note(f"preload {name}: {type(err).__name__}: {err}")
    try:
        from roman_datamodels import datamodels

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "preload.asdf")
            datamodels.ImageModel.create_fake_data(shape=(8, 8)).save(path)
            datamodels.open(path).close()
    except Exception as err:  # noqa: BLE001
        _note(f"preload of a Roman file: {type(err).__name__}: {err}")
    _forget_crds()


def _forget_crds() -> None:
    """Drop crds from the modules a job inherits, should a preloaded library have imported it.

    With romancal's stpipe installed (the ``peer`` extra), importing roman_datamodels imports
    crds through stpipe's entry points; configured at the server's start, it then failed every
    job's selection offline ('NoneType' object has no attribute 'endswith'). A job imports its
    own, as a plain process does.
    """
    for name in [name for name in sys.modules if name == "crds" or name.startswith("crds.")]:
        del sys.modules[name]


def _peer_uid(connection: socket.socket) -> int:
    """The user id of the process at the other end of a unix socket."""
    return struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]


def _same_file(path: str, inode: int) -> bool:
    """Whether ``path`` is still this server's file (removed, or a newer server's: no)."""
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _reap(watchdogs: set[int]) -> bool:
    """Collect the watchdogs that ended; whether any did."""
    ended = False
    with contextlib.suppress(ChildProcessError):
        while (pid := os.waitpid(-1, os.WNOHANG)[0]):
            watchdogs.discard(pid)
            ended = True
    return ended


def _note(line: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.write(2, f"{stamp} {line}\n".encode())


def _watch_job(connection: socket.socket, log_path: str, script_dir: str) -> None:
    """The watchdog of one job: take the request, fork the worker, wait for the worker or for
    the client to go, whichever comes first. Never returns."""
    try:
        connection.settimeout(HANDSHAKE_TIMEOUT)
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        (length,) = _LENGTH.unpack(message[:_LENGTH.size])
        body = message[_LENGTH.size:]
        if len(body) < length:
            body += _receive_exactly(connection, length - len(body))
        request = json.loads(body)
        if len(fds) != 3 or os.path.dirname(request["script"]) != script_dir:
            os._exit(0)  # the client falls back to a plain start
        connection.sendall(_READY)
        if _receive_exactly(connection, 1) != _GO:
            os._exit(0)
    except (OSError, ValueError, KeyError):
        os._exit(0)
    started = time.perf_counter()
    watchdog = os.getpid()
    worker = os.fork()
    if worker == 0:
        connection.close()
        _run_worker(request, fds, watchdog)
    for fd in fds:
        os.close(fd)
    connection.settimeout(None)
    with contextlib.suppress(OSError):
        _send_message(connection, {"worker": worker})
    client_gone = False
    with contextlib.suppress(OSError):
        ended = os.pidfd_open(worker)
        while True:
            readable, _, _ = select.select([connection, ended], [], [])
            if ended in readable:
                break
            if connection in readable and not connection.recv(1):
                client_gone = True
                break
    if client_gone:
        with contextlib.suppress(OSError):
            os.killpg(worker, signal.SIGKILL)
    _, status, usage = os.wait4(worker, 0)
    outcome = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
               else {"exit": os.WEXITSTATUS(status)})
    # The job's line first: once the client has the status, Snakemake may read the log.
    with contextlib.suppress(OSError), open(log_path, "a") as log:
        log.write(json.dumps({"job": os.path.basename(request["script"]), "log": request.get("log"),
                              "pid": worker, **outcome,
                              "client_gone": client_gone, "wall": round(time.perf_counter() - started, 3),
                              "cpu": round(usage.ru_utime + usage.ru_stime, 3),
                              "max_rss_kb": usage.ru_maxrss}) + "\n")
    with contextlib.suppress(OSError):
        _send_message(connection, outcome)
    os._exit(0)


def _run_worker(request: dict, fds: list[int], watchdog: int) -> None:
    """The job's process: its own process group, the client's streams and settings, the
    script run fresh as ``__main__``. Never returns."""
    os.setsid()
    _die_with_parent(watchdog)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    for name in ("SIGINT",):
        signal.signal(getattr(signal, name), signal.default_int_handler)
    for name in ("SIGTERM", "SIGHUP", "SIGCHLD"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    _reseed()
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(request["script"])
    import runpy

    code = 0
    try:
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as err:
        code = _exit_code(err.code)
    except BaseException:  # noqa: BLE001 - as the interpreter does: the traceback, status 1
        import traceback

        traceback.print_exc()
        code = 1
    import atexit

    atexit._run_exitfuncs()  # what the interpreter runs at its exit (tempfile's clean-ups among them)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _exit_code(code) -> int:
    """SystemExit's code as the interpreter maps it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent (the job's watchdog) dies."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the watchdog died before the request took effect
        os._exit(1)


def _reseed() -> None:
    """Fresh random state, as a new interpreter has (a fork copies the server's)."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def worker_records(folder: str) -> list[dict]:
    """The job lines of every server's log in ``folder``: script, log file, exit, wall, CPU,
    peak memory (kB) of each job run warm."""
    records = []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".log"):
                with open(os.path.join(folder, name)) as log:
                    records += [json.loads(line) for line in log if line.startswith("{")]
    return records
