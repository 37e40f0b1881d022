"""
Job sizing: the threads, CPUs, memory and runtime of every rule's jobs. No rules here.

Sizes come from what a job reads: an exposure's products from the pool's shape of its
Level 1 data (known when the DAG is built, before the product exists, at no file access),
an association's members from their files, otherwise the rule's declared inputs. Memory
and runtime double on each retry: a job killed for either comes back with more.
"""

import math

from snakemake.exceptions import IncompleteCheckpointException

from romanpipe.cores import worker_count
from romanpipe.product_sizes import product_size_mb


def step_threads(maximum_cores):
    """Threads of a step with a maximum_cores setting (none, quarter, half or all: the romancal documentation, section "Jump Detection").

    A share of this machine's cores: Snakemake lowers it to --cores when running locally.
    Each job gets its threads as OMP_NUM_THREADS, which caps the step's workers
    (romanpipe.cores).
    """
    return worker_count(maximum_cores, os.cpu_count() or 1)


def step_cpus(maximum_cores):
    """cpus_per_task of a step's SLURM job: its threads for a big ramp, one CPU for a small
    one (threads cost more than they save there). The job's CPU affinity then caps the
    step's workers (romanpipe.cores)."""
    most = step_threads(maximum_cores)

    def cpus_per_task(wildcards):
        return most if exposure_input_mb("ramp")(wildcards) >= SMALL_RAMP_MB else 1

    return cpus_per_task


# Below this size (inputs and references together) a ramp step gets one CPU on SLURM:
# about a 1024 x 1024 detector region of 16 resultants.
SMALL_RAMP_MB = 64


def exposure_input_mb(kind):
    """The size of an exposure's ``kind`` of product (level1, ramp, image), from the pool's
    shape of its Level 1 data (resultants x pixels).

    Known when the DAG is built, before the product exists, and costs no file access: a
    campaign plans hundreds of thousands of jobs (README, Performance).
    """

    def input_mb(wildcards, input=None):
        try:
            record = pool_record(wildcards.expo)
        except IncompleteCheckpointException:
            # The pool runs again first (Snakemake 9 cannot take this exception from a
            # resource function); the jobs are then planned again from its new table.
            return 0
        return product_size_mb(kind, int(record["nresultants"]), int(record["ny"]), int(record["nx"]))

    input_mb.__name__ = f"{kind}_mb"
    return input_mb


def step_memory_mb(factor, size_mb=None):
    """A step's mem_mb: 1 GB plus ``factor`` times its input's size, doubled on each retry.

    Ramp factors from the full-detector peaks in the README (steps hold about two
    ramps; dq_init turns 2-byte raw counts into 4-byte floats); a job killed for
    memory comes back with more. ``size_mb(wildcards, input)`` gives the input's size in
    MB (exposure_input_mb, association_data_mb); without it, the declared inputs' files.
    """

    def mem_mb(wildcards, input, attempt):
        data_mb = size_mb(wildcards, input) if size_mb else input.size_mb
        return int((1024 + factor * data_mb) * 2 ** (attempt - 1))

    mem_mb.__name__ = f"step_memory_mb_x{factor}"
    return mem_mb


def step_runtime_min(minutes_per_gb, size_mb=None):
    """A step's runtime (minutes; SLURM's time limit): 5 plus ``minutes_per_gb`` per GB of
    its input (``size_mb`` as for step_memory_mb), doubled on each retry (a job killed for time comes back with more).

    The factors are about ten times the full-detector times measured here (README,
    Performance), room for slower nodes and shared file systems.
    """

    def runtime(wildcards, input, attempt):
        data_mb = size_mb(wildcards, input) if size_mb else input.size_mb
        return math.ceil((5 + minutes_per_gb * data_mb / 1024) * 2 ** (attempt - 1))

    runtime.__name__ = f"step_runtime_min_x{minutes_per_gb}"
    return runtime


def metadata_runtime_min(seconds_per_file):
    """The runtime (minutes) of a job that reads only the metadata of its many input files: 5
    plus ``seconds_per_file`` for each, doubled on each retry. Its time grows with the count
    of files, not their size."""

    def runtime(wildcards, input, attempt):
        return math.ceil((5 + seconds_per_file * len(input) / 60) * 2 ** (attempt - 1))

    runtime.__name__ = f"metadata_runtime_min_x{seconds_per_file}"
    return runtime


def association_data_mb(wildcards, input):
    """The members' _cal products' size: what a high-level step reads (its declared input is
    the association file)."""
    try:
        members = association_members(wildcards)
    except IncompleteCheckpointException:
        # The association index is being made again (its checkpoint reran after a changed
        # _cal) while Snakemake evaluates a job planned from the previous one: it cannot take
        # this exception from a resource function. The job asks for the base amount; one
        # killed for it comes back with more, sized from the new index.
        return 0
    return _members_data_mb(tuple(members))


_complete_members_mb = {}


def _members_data_mb(members):
    """Summed once per association's members when all exist (the four steps of a cell ask for
    the same members); a member still to be made counts nothing and is looked at again."""
    if members in _complete_members_mb:
        return _complete_members_mb[members]
    sizes = [os.path.getsize(path) for path in members if os.path.exists(path)]
    data_mb = sum(sizes) / 2**20
    if len(sizes) == len(members):
        _complete_members_mb[members] = data_mb
    return data_mb
