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
        overrides=sorted({path for files in override_references().values() for path in files.values()}),
        code=step_script("pool"),
    output:
        pool=report(os.path.join(RESULTS, "pool.csv"), caption="../report/pool.rst",
                    category="Tables", labels={"table": "pool"}),
        quarantine=report(os.path.join(RESULTS, "quarantine.csv"), caption="../report/quarantine.rst",
                          category="Tables", labels={"table": "quarantine"}),
    params:
        python=PYTHON,
        # Changing which steps run, or an override, reruns this cheap job.
        step_reftypes=json.dumps(crds_reftypes(), sort_keys=True),
        overrides=json.dumps(override_references(), sort_keys=True),
        sources=(
            f"--exposure-list {config['inputs']['exposure_list']}"
            if config["inputs"]["exposure_list"]
            else f"--uncal-dir {config['inputs']['uncal_dir']}"
        ),
    log:
        os.path.join(LOGS, "pool.log"),
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {params.sources} --step-reftypes {params.step_reftypes:q} "
        "--overrides {params.overrides:q} "
        "--output {output.pool:q} --quarantine {output.quarantine:q} > {log:q} 2>&1"
