"""
Image-level calibration of each exposure, to its calibrated product _cal.

REQUIRED INPUTS: {expo}_rampfit.asdf (detector.smk); references selected in the pool
OUTPUTS:         results/exposures/{expo}_<suffix>.asdf for each step and
                 {expo}_cal.asdf, the last product of the exposure type's chain
                 (imaging: ... -> tweakreg; spectroscopic, darks, flats: assign_wcs)
"""


rule assign_wcs:
    """Attach the GWCS detector -> v2v3 -> world (romancal AssignWcsStep)."""
    input:
        image=upstream_product("assign_wcs"),
        distortion=reference("assign_wcs", "distortion"),
        parameter_file=parameter_file(),
        code=step_script("assign_wcs"),
    output:
        product("assign_wcs"),
    params:
        python=PYTHON,
        values=step_parameters("assign_wcs"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("assign_wcs"),
    resources:
        mem_mb=step_memory_mb(2, exposure_input_mb("image")),
        runtime=step_runtime_min(2, exposure_input_mb("image")),
    log:
        os.path.join(LOGS, "assign_wcs", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "assign_wcs", "{expo}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.image:q} {output:q} "
        "--override-distortion {input.distortion:q} --workflow-params {params.values:q} "
        "{params.parameter_file} {params.skipped} > {log:q} 2>&1"


rule flat_field:
    """Divide by the FLAT and propagate its errors (romancal FlatFieldStep)."""
    input:
        image=upstream_product("flat_field"),
        flat=reference("flat_field", "flat"),
        parameter_file=parameter_file(),
        code=step_script("flat_field"),
    output:
        product("flat_field"),
    params:
        python=PYTHON,
        values=step_parameters("flat_field"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("flat_field"),
    resources:
        mem_mb=step_memory_mb(3, exposure_input_mb("image")),
        runtime=step_runtime_min(2, exposure_input_mb("image")),
    log:
        os.path.join(LOGS, "flat_field", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "flat_field", "{expo}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.image:q} {output:q} --override-flat {input.flat:q} "
        "--workflow-params {params.values:q} {params.parameter_file} {params.skipped} > {log:q} 2>&1"


rule photom:
    """Record the flux calibration of the optical element (romancal PhotomStep)."""
    input:
        image=upstream_product("photom"),
        photom=reference("photom", "photom"),
        parameter_file=parameter_file(),
        code=step_script("photom"),
    output:
        product("photom"),
    params:
        python=PYTHON,
        values=step_parameters("photom"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("photom"),
    resources:
        mem_mb=step_memory_mb(2, exposure_input_mb("image")),
        runtime=step_runtime_min(2, exposure_input_mb("image")),
    log:
        os.path.join(LOGS, "photom", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "photom", "{expo}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.image:q} {output:q} --override-photom {input.photom:q} "
        "--workflow-params {params.values:q} {params.parameter_file} {params.skipped} > {log:q} 2>&1"


rule cal:
    """The exposure's _cal product: the last step of its type's chain, the rest marked SKIPPED."""
    input:
        image=cal_input,
        code=step_script("cal_product"),
    output:
        CAL_PRODUCT,
    params:
        python=PYTHON,
        not_applicable=not_applicable_option,
    resources:
        mem_mb=step_memory_mb(2, exposure_input_mb("image")),
        runtime=step_runtime_min(2, exposure_input_mb("image")),
    log:
        os.path.join(LOGS, "cal", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "cal", "{expo}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.image:q} {output:q} {params.not_applicable} > {log:q} 2>&1"


rule source_detection:
    """Find point sources for tweakreg; the catalog travels inside the product (romancal SourceDetectionStep)."""
    input:
        image=upstream_product("source_detection"),
        parameter_file=parameter_file(),
        code=step_script("source_detection"),
    output:
        product("source_detection"),
    params:
        python=PYTHON,
        values=step_parameters("source_detection"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("source_detection"),
    resources:
        mem_mb=step_memory_mb(3, exposure_input_mb("image")),
        runtime=step_runtime_min(10, exposure_input_mb("image")),
    log:
        os.path.join(LOGS, "source_detection", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "source_detection", "{expo}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.image:q} {output:q} --workflow-params {params.values:q} "
        "{params.parameter_file} {params.skipped} > {log:q} 2>&1"


rule tweakreg:
    """Align the WCS to the reference catalog (Gaia, or a local file) with tweakwcs (romancal TweakRegStep),
    together with the other detectors of the exposure as one group (tweakreg.align_exposure)."""
    input:
        image=upstream_product("tweakreg"),
        exposure_images=tweakreg_exposure_images,
        catalogs=tweakreg_catalog_files(),
        parameter_file=parameter_file(),
        code=step_script("tweakreg"),
    output:
        product("tweakreg"),
    params:
        python=PYTHON,
        values=step_parameters("tweakreg"),
        parameter_file=parameter_file_option(),
        skipped=skipped_before("tweakreg"),
        exposure_images=exposure_images_option,
    resources:
        mem_mb=step_memory_mb(2, exposure_input_mb("image")),
        runtime=step_runtime_min(10, exposure_input_mb("image")),
    log:
        os.path.join(LOGS, "tweakreg", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "tweakreg", "{expo}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.image:q} {output:q} --workflow-params {params.values:q} "
        "{params.exposure_images} {params.parameter_file} {params.skipped} > {log:q} 2>&1"
