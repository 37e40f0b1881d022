"""
The exposure pool: every Level 1 input's metadata, read once, and its references.

REQUIRED INPUTS: the Level 1 files found by common.smk; the CRDS context
OUTPUTS:         results/pool.csv (one row per valid exposure, with ref_<reftype>
                 columns), results/quarantine.csv (rejected inputs and why)
"""


checkpoint pool:
    """Validate every input and select each exposure's references through CRDS."""
    input:
        uncal=list(EXPOSURES.values()),
        context=crds_context_file(),
        overrides=override_files(),
        code=step_script("pool"),
    output:
        pool=report(
            os.path.join(RESULTS, "pool.csv"),
            caption="../report/pool.rst",
            category="Tables",
            labels={"table": "pool"},
        ),
        quarantine=POOL_QUARANTINE,
    params:
        python=PYTHON,
        step_reftypes=pool_step_reftypes(),
        overrides=pool_overrides(),
        sources=pool_sources_option(),
    resources:
        # Reads every input once in bounded chunks (romanpipe.asdf_blocks) and one exposure's
        # metadata at a time: memory does not grow with the campaign; time does.
        mem_mb=2000,
        runtime=step_runtime_min(1),
    log:
        os.path.join(LOGS, "pool.log"),
    benchmark:
        os.path.join(BENCHMARKS, "pool.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {params.sources} --step-reftypes {params.step_reftypes:q} "
        "--overrides {params.overrides:q} "
        "--output {output.pool:q} --quarantine {output.quarantine:q} > {log:q} 2>&1"
