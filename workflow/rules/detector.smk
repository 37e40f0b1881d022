"""
Detector-level calibration of each exposure: one rule per romancal step.

REQUIRED INPUTS: Level 1 files (common.smk), references selected in the pool
OUTPUTS:         results/exposures/{expo}_<suffix>.asdf for each step, up to the
                 count-rate image {expo}_rampfit.asdf (romancal-1.1 chain: then the
                 dark-subtracted rate {expo}_darkcurrent.asdf)
"""


rule dq_init:
    """Level 1 -> RampModel with initialized DQ (romancal DQInitStep)."""
    input:
        uncal=uncal_path,
        mask=reference("dq_init", "mask"),
        parameter_file=parameter_file(),
        code=step_script("dq_init"),
    output:
        step_output("dq_init"),
    params:
        python=PYTHON,
        values=step_parameters("dq_init"),
        parameter_file=parameter_file_option(),
    resources:
        mem_mb=step_memory_mb(3.2, exposure_input_mb("level1")),
        runtime=step_runtime_min(3, exposure_input_mb("level1")),
    log:
        os.path.join(LOGS, "dq_init", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "dq_init", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.uncal:q} {output:q} --override-mask {input.mask:q} "
        "--workflow-params {params.values:q} {params.parameter_file} > {log:q} 2>&1"


rule saturation:
    """Flag saturated and A/D-floor resultants (romancal SaturationStep)."""
    input:
        ramp=upstream_product("saturation"),
        saturation=reference("saturation", "saturation"),
        parameter_file=parameter_file(),
        code=step_script("saturation"),
    output:
        step_output("saturation"),
    params:
        python=PYTHON,
        values=step_parameters("saturation"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("saturation"),
    resources:
        mem_mb=step_memory_mb(2, exposure_input_mb("ramp")),
        runtime=step_runtime_min(2, exposure_input_mb("ramp")),
    log:
        os.path.join(LOGS, "saturation", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "saturation", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.ramp:q} {output:q} --override-saturation {input.saturation:q} "
        "--workflow-params {params.values:q} {params.parameter_file} {params.skipped} > {log:q} 2>&1"


rule refpix:
    """Remove offsets, trends and correlated read noise seen by the reference pixels (romancal RefPixStep)."""
    input:
        ramp=upstream_product("refpix"),
        refpix=reference("refpix", "refpix"),
        parameter_file=parameter_file(),
        code=step_script("refpix"),
    output:
        step_output("refpix"),
    params:
        python=PYTHON,
        values=step_parameters("refpix"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("refpix"),
    resources:
        mem_mb=step_memory_mb(2.5, exposure_input_mb("ramp")),
        runtime=step_runtime_min(3, exposure_input_mb("ramp")),
    log:
        os.path.join(LOGS, "refpix", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "refpix", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.ramp:q} {output:q} --override-refpix {input.refpix:q} "
        "--workflow-params {params.values:q} {params.parameter_file} {params.skipped} > {log:q} 2>&1"


rule dark_decay:
    """Subtract the decaying dark signal of the first reads (romancal DarkDecayStep; romancal-1.1 chain)."""
    input:
        ramp=upstream_product("dark_decay"),
        darkdecaysignal=reference("dark_decay", "darkdecaysignal"),
        parameter_file=parameter_file(),
        code=step_script("dark_decay"),
    output:
        step_output("dark_decay"),
    params:
        python=PYTHON,
        values=step_parameters("dark_decay"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("dark_decay"),
    resources:
        mem_mb=step_memory_mb(2.5, exposure_input_mb("ramp")),
        runtime=step_runtime_min(2, exposure_input_mb("ramp")),
    log:
        os.path.join(LOGS, "dark_decay", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "dark_decay", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.ramp:q} {output:q} "
        "--override-darkdecaysignal {input.darkdecaysignal:q} "
        "--workflow-params {params.values:q} {params.parameter_file} {params.skipped} > {log:q} 2>&1"


rule wfi18_transient:
    """Fit and remove the first-read transient of WFI18 (romancal WFI18TransientStep; romancal-1.1 chain).

    Other detectors' ramps pass through unchanged (cal_step N/A).
    """
    input:
        ramp=upstream_product("wfi18_transient"),
        parameter_file=parameter_file(),
        code=step_script("wfi18_transient"),
    output:
        step_output("wfi18_transient"),
    params:
        python=PYTHON,
        values=step_parameters("wfi18_transient"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("wfi18_transient"),
    resources:
        mem_mb=step_memory_mb(2.5, exposure_input_mb("ramp")),
        runtime=step_runtime_min(2, exposure_input_mb("ramp")),
    log:
        os.path.join(LOGS, "wfi18_transient", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "wfi18_transient", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.ramp:q} {output:q} "
        "--workflow-params {params.values:q} {params.parameter_file} {params.skipped} > {log:q} 2>&1"


rule linearity:
    """Correct the classic non-linearity of each resultant (romancal LinearityStep).

    With resultant_aware, read by read with the INVERSELINEARITY and INTEGRALNONLINEARITY
    references as well (romancal 1.1).
    """
    input:
        unpack(optional_references("linearity")),
        ramp=upstream_product("linearity"),
        linearity=reference("linearity", "linearity"),
        parameter_file=parameter_file(),
        code=step_script("linearity"),
    output:
        step_output("linearity"),
    params:
        python=PYTHON,
        values=step_parameters("linearity"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("linearity"),
        optional_references=optional_reference_options("linearity"),
    resources:
        mem_mb=step_memory_mb(2.5, exposure_input_mb("ramp")),
        runtime=step_runtime_min(3, exposure_input_mb("ramp")),
    log:
        os.path.join(LOGS, "linearity", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "linearity", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.ramp:q} {output:q} --override-linearity {input.linearity:q} "
        "{params.optional_references} --workflow-params {params.values:q} {params.parameter_file} "
        "{params.skipped} > {log:q} 2>&1"


rule dark_current:
    """Subtract the dark accumulated by each resultant's mean read time (romancal DarkCurrentStep).

    In the romancal-1.1 chain it runs after ramp_fit and subtracts the dark rate from the rate image.
    """
    input:
        ramp=upstream_product("dark_current"),
        dark=reference("dark_current", "dark"),
        parameter_file=parameter_file(),
        code=step_script("dark_current"),
    output:
        step_output("dark_current"),
    params:
        python=PYTHON,
        values=step_parameters("dark_current"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("dark_current"),
        dark_output=dark_output_option,
    resources:
        mem_mb=step_memory_mb(2.5, exposure_input_mb("ramp")),
        runtime=step_runtime_min(2, exposure_input_mb("ramp")),
    log:
        os.path.join(LOGS, "dark_current", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "dark_current", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.ramp:q} {output:q} --override-dark {input.dark:q} "
        "--workflow-params {params.values:q} {params.parameter_file} {params.skipped} "
        "{params.dark_output} > {log:q} 2>&1"


rule jump:
    """Flag jumps by two-point differences, even ramps only (romancal JumpStep).

    Runs only with ramp_fit.use_ramp_jump_detection false; otherwise ramp fitting
    finds the jumps itself and this step is recorded as SKIPPED.
    """
    input:
        ramp=upstream_product("jump"),
        gain=reference("jump", "gain"),
        readnoise=reference("jump", "readnoise"),
        parameter_file=parameter_file(),
        code=step_script("jump"),
    output:
        step_output("jump"),
    params:
        python=PYTHON,
        values=step_parameters("jump"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("jump"),
    threads: step_threads(config["jump"]["maximum_cores"])
    resources:
        mem_mb=step_memory_mb(2, exposure_input_mb("ramp")),
        runtime=step_runtime_min(6, exposure_input_mb("ramp")),
        cpus_per_task=step_cpus(config["jump"]["maximum_cores"]),
    log:
        os.path.join(LOGS, "jump", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "jump", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.ramp:q} {output:q} --override-gain {input.gain:q} "
        "--override-readnoise {input.readnoise:q} --workflow-params {params.values:q} "
        "{params.parameter_file} {params.skipped} > {log:q} 2>&1"


rule ramp_fit:
    """Fit each pixel's count rate and trim the reference border (romancal RampFitStep).

    ols_cas22 (default) and likely find the jumps themselves; with save_opt (ols) the script also
    writes {expo}_fitopt.asdf beside the product.
    """
    input:
        ramp=upstream_product("ramp_fit"),
        gain=reference("ramp_fit", "gain"),
        readnoise=reference("ramp_fit", "readnoise"),
        dark=reference("ramp_fit", "dark"),
        parameter_file=parameter_file(),
        code=step_script("ramp_fit"),
    output:
        step_output("ramp_fit"),
    params:
        python=PYTHON,
        values=step_parameters("ramp_fit"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("ramp_fit"),
    threads: step_threads(config["ramp_fit"]["maximum_cores"])
    resources:
        mem_mb=step_memory_mb(2, exposure_input_mb("ramp")),
        runtime=step_runtime_min(6, exposure_input_mb("ramp")),
        cpus_per_task=step_cpus(config["ramp_fit"]["maximum_cores"]),
    log:
        os.path.join(LOGS, "ramp_fit", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "ramp_fit", "{expo}.tsv")
    conda:
        "../../envs/detector.yaml"
    shell:
        "{params.python} {input.code:q} {input.ramp:q} {output:q} --override-gain {input.gain:q} "
        "--override-readnoise {input.readnoise:q} --override-dark {input.dark:q} "
        "--workflow-params {params.values:q} {params.parameter_file} {params.skipped} > {log:q} 2>&1"
