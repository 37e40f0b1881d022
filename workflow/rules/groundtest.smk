"""
Ground-test (TVAC) products beside the partial pipeline (config/groundtest.yaml, README
"Ground-test data"): superbias and DARK references fitted from each detector's dark
exposures, and the TVAC tutorial's ramp diagnostics of every other exposure.

REQUIRED INPUTS: the Level 1 files and the pool (pool.smk); the _linearity products (detector.smk)
OUTPUTS:         results/references/{detector}_superbias.asdf and {detector}_dark.asdf,
                 results/diagnostics/{expo}/<figure>.png (in the report)
"""


rule dark_references:
    """Superbias and dark rate of one detector from its dark exposures (the TVAC tutorial's bias_intercept_from_cube)."""
    input:
        darks=dark_exposures,
        code=step_script("dark_references"),
    output:
        superbias=DARK_REFERENCE.replace("{kind}", "superbias"),
        dark=DARK_REFERENCE.replace("{kind}", "dark"),
    params:
        python=PYTHON,
        author=config["groundtest"]["author"],
        useafter=useafter_option(),
    resources:
        # one ramp at a time, read in row blocks, plus two planes per dark
        mem_mb=step_memory_mb(1),
        runtime=step_runtime_min(3),
    log:
        os.path.join(LOGS, "dark_references", "{detector}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "dark_references", "{detector}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.darks:q} --superbias {output.superbias:q} "
        "--dark {output.dark:q} --author {params.author:q} {params.useafter} > {log:q} 2>&1"


rule ramp_diagnostics:
    """The TVAC tutorial's figures of one exposure's partially calibrated ramp."""
    input:
        ramp=upstream_product("dark_current"),
        raw=uncal_path,
        saturation=reference("saturation", "saturation"),
        code=step_script("ramp_diagnostics"),
    output:
        **{
            figure: report(
                os.path.join(DIAGNOSTICS_DIR, f"{figure}.png"),
                caption="../report/diagnostics.rst",
                category="Ground test",
                subcategory="{expo}",
                labels={"exposure": "{expo}", "figure": figure},
            )
            for figure in DIAGNOSTIC_FIGURES
        },
    params:
        python=PYTHON,
        out_dir=DIAGNOSTICS_DIR,
        center=" ".join(map(str, config["groundtest"]["center"])),
        half_size=config["groundtest"]["half_size"],
        frames=frames_option(),
    resources:
        mem_mb=step_memory_mb(0.5),
        runtime=step_runtime_min(2),
    log:
        os.path.join(LOGS, "ramp_diagnostics", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "ramp_diagnostics", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.ramp:q} --saturation {input.saturation:q} "
        "--raw {input.raw:q} --out-dir {params.out_dir:q} --center {params.center} "
        "--half-size {params.half_size} {params.frames} > {log:q} 2>&1"
