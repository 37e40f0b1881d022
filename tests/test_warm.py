"""Warm start (romanpipe.warm, scripts/warm_start.py): a job run in a worker forked from a
pre-imported server keeps everything a plain ``python SCRIPT`` start gives it.

Each test runs a small probe script through the client, in a folder of its own (a server
serves one scripts folder); the probe says whether it started warm (numpy already imported
when its first line ran), which a plain start never is.
"""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
CLIENT = SCRIPTS / "warm_start.py"
SERVER_START_TIMEOUT = 120

spec = importlib.util.spec_from_file_location("romanpipe_warm_test", SCRIPTS / "romanpipe" / "warm.py")
warm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(warm)

PROBE = '''\
import os, subprocess, sys, time
started_warm = "numpy" in sys.modules
print("warm" if started_warm else "plain", "VERSION=1", sys.argv[1:], os.getcwd(),
      os.environ.get("PROBE_VALUE"), oct(os.umask(0o022)))
print("to stderr", file=sys.stderr)
command = sys.argv[1] if len(sys.argv) > 1 else ""
if command == "sleep":
    child = subprocess.Popen(["sleep", "300"])
    open(sys.argv[2], "w").write(f"{os.getpid()} {os.getppid()} {child.pid}")
    time.sleep(300)
if command == "term":
    sys.stdout.flush()
    os.kill(os.getpid(), 15)
if command == "raise":
    raise RuntimeError("the probe failed")
sys.exit(int(command) if command.isdigit() else 0)
'''


class Setup:
    """A scripts folder with the probe, an environment naming a warm folder, and the client."""

    def __init__(self, root: Path, name: str):
        self.scripts = root / f"scripts_{name}"
        self.scripts.mkdir()
        self.probe = self.scripts / "probe.py"
        self.probe.write_text(PROBE)
        self.workdir = root / f"work_{name}"
        self.workdir.mkdir()
        self.folder = root / f"warm_{name}"
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("SLURM_")}
        self.env.update({warm.WARM_DIR_ENV: str(self.folder), "PROBE_VALUE": name})

    def run(self, *args, plain=False, env=None, **kwargs):
        command = [sys.executable, *([] if plain else [str(CLIENT)]), str(self.probe), *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, cwd=self.workdir,
                              env=env or self.env, timeout=120, **kwargs)

    def start_server(self):
        """The first job runs plainly and starts a server; wait until it listens."""
        first = self.run()
        assert first.returncode == 0 and first.stdout.startswith("plain"), first.stderr
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if " ready in " in self.log():
                time.sleep(0.5)  # it binds its socket right after saying so
                return
            time.sleep(0.2)
        raise AssertionError(f"no server: {self.log()}")

    def log(self) -> str:
        return "".join(path.read_text() for path in self.folder.glob("*.log"))

    def stop_servers(self):
        # A server whose lock file goes exits within a second.
        for path in self.folder.glob("*.lock"):
            path.unlink()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    setup = Setup(tmp_path_factory.mktemp("warm"), "served")
    setup.start_server()
    yield setup
    setup.stop_servers()


@pytest.fixture
def fresh(tmp_path):
    setup = Setup(tmp_path, "fresh")
    yield setup
    setup.stop_servers()


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_warm_job_has_the_plain_jobs_output_streams_and_status(served):
    warm_run = served.run(3, "an argument")
    plain_run = served.run(3, "an argument", plain=True)
    assert warm_run.stdout.startswith("warm ") and plain_run.stdout.startswith("plain ")
    assert warm_run.stdout.removeprefix("warm ") == plain_run.stdout.removeprefix("plain ")
    assert str(served.workdir) in warm_run.stdout  # the job's working directory, not the server's
    assert warm_run.stderr == plain_run.stderr == "to stderr\n"
    assert warm_run.returncode == plain_run.returncode == 3
    assert '"job": "probe.py"' in served.log() and '"exit": 3' in served.log()


def test_an_exception_and_a_signal_end_the_job_as_they_end_a_plain_one(served):
    warm_run, plain_run = served.run("raise"), served.run("raise", plain=True)
    assert warm_run.returncode == plain_run.returncode == 1
    assert warm_run.stderr.splitlines()[-1] == plain_run.stderr.splitlines()[-1] == (
        "RuntimeError: the probe failed")
    warm_run, plain_run = served.run("term"), served.run("term", plain=True)
    assert warm_run.stdout.startswith("warm ")
    assert warm_run.returncode == plain_run.returncode == -signal.SIGTERM


def test_an_edited_script_runs_as_edited(served):
    assert "VERSION=1" in served.run().stdout
    served.probe.write_text(PROBE.replace("VERSION=1", "VERSION=2"))
    try:
        edited = served.run()
        assert edited.stdout.startswith("warm ") and "VERSION=2" in edited.stdout
    finally:
        served.probe.write_text(PROBE)


def start_sleeping_job(setup: Setup, tmp_path: Path):
    """A warm job that starts a child process and sleeps: (client, worker, watchdog, child)."""
    pids = tmp_path / "pids"
    client = subprocess.Popen([sys.executable, str(CLIENT), str(setup.probe), "sleep", str(pids)],
                              cwd=setup.workdir, env=setup.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker, watchdog, child = map(int, pids.read_text().split())
    assert worker != client.pid and watchdog != client.pid
    return client, worker, watchdog, child


def test_killing_the_client_kills_the_worker_and_its_children(served, tmp_path):
    client, worker, _, child = start_sleeping_job(served, tmp_path)
    client.kill()  # SIGKILL, as Snakemake's kill -9 or a SLURM cancel of the job
    client.communicate()
    assert gone(worker) and gone(child)


def test_killing_the_watchdog_kills_the_worker_and_fails_the_job(served, tmp_path):
    client, worker, watchdog, child = start_sleeping_job(served, tmp_path)
    os.kill(watchdog, signal.SIGKILL)
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 1 and "worker running this job was lost" in stderr
    assert gone(worker) and gone(child)


def test_slurm_jobs_run_plainly(served):
    result = served.run(env={**served.env, "SLURM_JOB_ID": "1"})
    assert result.returncode == 0 and result.stdout.startswith("plain ")


def test_without_a_warm_folder_the_client_is_a_plain_start(tmp_path):
    setup = Setup(tmp_path, "off")
    result = setup.run(5, env={**setup.env, warm.WARM_DIR_ENV: ""})
    assert result.returncode == 5 and result.stdout.startswith("plain ")
    assert not setup.folder.exists()


def test_a_server_that_never_answers_costs_the_job_its_warm_start_only(tmp_path, monkeypatch):
    folder = tmp_path / "warm"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    key = warm.server_key(str(SCRIPTS), dict(os.environ))
    socket_path = warm.server_paths(str(folder), key)["sock"]
    import socket

    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(socket_path)
    silent.listen(1)  # connections queue, nobody answers
    try:
        started = time.monotonic()
        assert warm.run_warm(str(folder), str(SCRIPTS / "saturation.py"), ["--help"], timeout=0.5) is None
        assert time.monotonic() - started < 5
    finally:
        silent.close()
    # a socket file nobody listens on any more: refused at once
    assert warm.run_warm(str(folder), str(SCRIPTS / "saturation.py"), ["--help"], timeout=0.5) is None
    for path in folder.glob("*.lock"):  # the server this started for the next jobs: stop it
        path.unlink()
    Path(socket_path).unlink(missing_ok=True)


def test_a_job_started_while_the_server_imports_waits_for_it_and_runs_warm(fresh):
    first = fresh.run()  # plain, and starts the server, which takes seconds to import
    assert first.returncode == 0 and first.stdout.startswith("plain"), first.stderr
    paths = warm.server_paths(str(fresh.folder), warm.server_key(str(fresh.scripts), fresh.env))
    deadline = time.monotonic() + 5
    while not warm.server_starting(paths["lock"]) and time.monotonic() < deadline:
        time.sleep(0.01)  # the server detaches, then takes its lock
    assert warm.server_starting(paths["lock"]) and not Path(paths["sock"]).exists(), fresh.log()
    # The client's own wait, with a bound a loaded machine's server import stays within
    # (the client's is HANDSHAKE_TIMEOUT); 100: no server took the job.
    waiting_client = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location("
                      f"'warm', {str(SCRIPTS / 'romanpipe' / 'warm.py')!r}); "
                      "warm = importlib.util.module_from_spec(spec); spec.loader.exec_module(warm); "
                      f"status = warm.run_warm({str(fresh.folder)!r}, {str(fresh.probe)!r}, ['7'], "
                      f"timeout={SERVER_START_TIMEOUT}); "
                      "sys.exit(100) if status is None else warm.end_as(status)")
    second = subprocess.run([sys.executable, "-c", waiting_client], capture_output=True, text=True,
                            cwd=fresh.workdir, env=fresh.env, timeout=2 * SERVER_START_TIMEOUT)
    assert second.returncode == 7 and second.stdout.startswith("warm "), (second.stdout, fresh.log())


def test_a_job_waiting_for_a_starting_server_runs_plainly_once_its_lock_is_free(fresh):
    """A server that dies while it imports releases its lock: the waiting job stops waiting."""
    import fcntl

    fresh.folder.mkdir()
    paths = warm.server_paths(str(fresh.folder), warm.server_key(str(fresh.scripts), fresh.env))
    with open(paths["lock"], "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a server "importing" for ever
        waiting = subprocess.Popen([sys.executable, str(CLIENT), str(fresh.probe), "3"], cwd=fresh.workdir,
                                   env=fresh.env, stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert waiting.poll() is None  # waits for the server rather than importing itself
    output, _ = waiting.communicate(timeout=30)  # the lock closed, released: the job runs now
    assert waiting.returncode == 3 and output.startswith("plain ")


def test_a_changed_library_module_stops_the_server_and_the_job_runs_plainly(fresh):
    fresh.start_server()
    assert fresh.run().stdout.startswith("warm ")
    # romanpipe.timing is among the modules the server imported; touching it stands for an edit.
    module = SCRIPTS / "romanpipe" / "timing.py"
    before = module.stat()
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    try:
        result = fresh.run()
    finally:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert result.returncode == 0 and result.stdout.startswith("plain ")
    assert "changed since it was imported; exiting" in fresh.log()


def test_changed_modules_names_an_edited_file(tmp_path):
    module = tmp_path / "edited.py"
    module.write_text("x = 1\n")
    recorded = {str(module): (module.stat().st_mtime_ns, module.stat().st_size)}
    assert warm.changed_modules(recorded) == []
    module.write_text("x = 22\n")
    assert warm.changed_modules(recorded) == [str(module)]
    module.unlink()
    assert warm.changed_modules(recorded) == [str(module)]


def test_exit_handlers_run_as_at_a_plain_exit(served, tmp_path):
    """A script that returns normally leaves nothing an atexit clean-up would have removed."""
    marker = tmp_path / "cleaned"
    script = served.scripts / "exits.py"
    script.write_text(f"import atexit, pathlib\natexit.register(pathlib.Path({str(marker)!r}).touch)\n")
    result = subprocess.run([sys.executable, str(CLIENT), str(script)], capture_output=True, text=True,
                            cwd=served.workdir, env=served.env, timeout=120)
    assert result.returncode == 0 and marker.exists()
    assert '"job": "exits.py"' in served.log()


def test_a_job_of_another_code_revision_does_not_use_the_server(served):
    other = served.run(env={**served.env, "ROMANPIPE_CODE_REVISION": "another-revision"})
    assert other.returncode == 0 and other.stdout.startswith("plain ")
    assert served.run().stdout.startswith("warm ")


SELECTS = """\
import sys
from romanpipe import refs
print("warm" if "tweakwcs" in sys.modules else "plain",
      refs.best_references(refs.selection_parameters({"detector": "WFI01", "optical_element": "F158",
      "start_time": "2027-01-01T00:00:00", "exposure_type": "WFI_IMAGE"}), ["saturation"])["saturation"])
"""


# A sitecustomize that imports crds when roman_datamodels is first imported, as stpipe's asdf
# entry points do when the peer extra is installed (the client, which imports neither, is unchanged).
IMPORT_CRDS_WITH_ROMAN_DATAMODELS = """\
import importlib.abc
import sys


class ImportCrdsWithRomanDatamodels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "roman_datamodels":
            sys.meta_path.remove(self)
            import crds.client.api  # noqa: F401
        return None


sys.meta_path.insert(0, ImportCrdsWithRomanDatamodels())
"""


@pytest.mark.parametrize("crds_with_roman_datamodels", [False, True])
def test_a_warm_job_selects_references_through_crds_as_a_plain_one(tmp_path, crds_with_roman_datamodels):
    """The job configures and imports crds itself, as in a new process (a crds imported ahead by
    the server failed here: 'NoneType' object has no attribute 'endswith'), also when a library
    imports crds with roman_datamodels (as stpipe's entry points do when the peer extra is
    installed: then the server's preload imports crds)."""
    from romanpipe import crds_cache

    from astropy.time import Time
    from roman_datamodels import datamodels

    delivery = tmp_path / "delivery"
    delivery.mkdir()
    for name, useafter in (("roman_wfi_saturation_0001.asdf", "2020-01-01T00:00:00"),
                           ("roman_wfi_saturation_0002.asdf", "2027-06-01T00:00:00")):
        model = datamodels.SaturationRefModel.create_fake_data(shape=(8, 8))
        model.meta.instrument.detector = "WFI01"
        model.meta.useafter = Time(useafter)
        model.save(delivery / name)
    cache = tmp_path / "crds_cache"
    crds_cache.deliver(cache, sorted(delivery.iterdir()), description="test delivery")
    setup = Setup(tmp_path, "crds")
    (setup.scripts / "selects.py").write_text(SELECTS)
    setup.probe = setup.scripts / "selects.py"
    setup.env = {name: value for name, value in setup.env.items() if not name.startswith("CRDS_")}
    setup.env["CRDS_PATH"] = str(cache)
    if crds_with_roman_datamodels:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(IMPORT_CRDS_WITH_ROMAN_DATAMODELS)
        setup.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), setup.env.get("PYTHONPATH")]))
    try:
        setup.start_server()
        warm_run, plain_run = setup.run(), setup.run(plain=True)
    finally:
        setup.stop_servers()
    assert warm_run.returncode == plain_run.returncode == 0, warm_run.stderr + plain_run.stderr
    assert warm_run.stdout.startswith("warm ") and plain_run.stdout.startswith("plain ")
    assert warm_run.stdout.split()[1] == plain_run.stdout.split()[1]
    assert warm_run.stdout.split()[1].endswith("roman_wfi_saturation_0001.asdf")


def test_a_served_folder_copies_as_plain_files(served, tmp_path):
    """A campaign is copied with its results: the warm folder holds no socket to trip a copy."""
    import shutil

    assert served.run().stdout.startswith("warm ")
    shutil.copytree(served.folder, tmp_path / "copy")
    assert {path.suffix for path in (tmp_path / "copy").iterdir()} == {".lock", ".log"}
