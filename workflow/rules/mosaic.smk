"""
High-level processing: associations (a checkpoint) and, per association, flux ->
skymatch -> outlier_detection -> resample to a Level 3 mosaic.

REQUIRED INPUTS: {expo}_cal.asdf of every imaging exposure (exposure.smk), or in the
                 Level 3 stage of a sharded campaign the _cal products inputs.cal_list names
OUTPUTS:         results/associations.csv (the checkpoint's index),
                 results/associations/{asn}_asn.json (one per association),
                 results/mosaics/{asn}/{asn}_<suffix>_asn.json per step, with the
                 members' products it lists beside it, and results/mosaics/{product}_i2d.asdf
"""


checkpoint associations:
    """Group the calibrated images by sky cell (or overlap) into high-level products, or index the user's files."""
    input:
        cal=imaging_cal_products,
        skycells=skycells_source(),
        code=step_script("associate"),
    output:
        report(
            ASSOCIATION_INDEX,
            caption="../report/associations.rst",
            category="Tables",
            labels={"table": "associations"},
        ),
    params:
        python=PYTHON,
        cal=cal_products_option,
        grouping=association_options(),
        left_out=left_out_option,
    resources:
        # the members' metadata only, one at a time
        mem_mb=step_memory_mb(0),
        runtime=metadata_runtime_min(0.2),
    log:
        os.path.join(LOGS, "associations.log"),
    benchmark:
        os.path.join(BENCHMARKS, "associations.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} index {params.cal} --output {output:q} "
        "{params.grouping} {params.left_out} > {log:q} 2>&1"


rule association_file:
    """One association file from the index; unchanged members leave it (and its mosaic) alone."""
    input:
        # The tree (params) is read from the checkpoint's index: a job run elsewhere (a SLURM
        # job's own Snakemake) can only read it as an input. ancient(): a new index does not
        # redo this file; a changed tree does (params).
        index=ancient(ASSOCIATION_INDEX),
        code=step_script("associate"),
    output:
        ASSOCIATION_FILE,
    params:
        python=PYTHON,
        tree=association_tree,
    resources:
        mem_mb=step_memory_mb(0),
        runtime=step_runtime_min(0),
    log:
        os.path.join(LOGS, "association_file", "{asn}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "association_file", "{asn}.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} write --tree {params.tree:q} --output {output:q} > {log:q} 2>&1"


rule flux:
    """DN/s -> MJy/sr for every member (romancal FluxStep)."""
    input:
        asn=mosaic_upstream("flux"),
        members=association_members,
        parameter_file=parameter_file(),
        code=step_script("flux"),
    output:
        mosaic_asn("flux"),
    params:
        python=PYTHON,
        values=step_parameters("flux"),
        parameter_file=parameter_file_option(),
    resources:
        mem_mb=step_memory_mb(1, association_data_mb),
        runtime=step_runtime_min(2, association_data_mb),
    log:
        os.path.join(LOGS, "flux", "{asn}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "flux", "{asn}.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} {input.asn:q} {output:q} --workflow-params {params.values:q} "
        "{params.parameter_file} > {log:q} 2>&1"


rule skymatch:
    """Match the sky levels of overlapping members on the sky (romancal SkyMatchStep)."""
    input:
        asn=mosaic_upstream("skymatch"),
        parameter_file=parameter_file(),
        code=step_script("skymatch"),
    output:
        mosaic_asn("skymatch"),
    params:
        python=PYTHON,
        values=step_parameters("skymatch"),
        parameter_file=parameter_file_option(),
    resources:
        mem_mb=step_memory_mb(2, association_data_mb),
        runtime=step_runtime_min(5, association_data_mb),
    log:
        os.path.join(LOGS, "skymatch", "{asn}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "skymatch", "{asn}.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} {input.asn:q} {output:q} --workflow-params {params.values:q} "
        "{params.parameter_file} > {log:q} 2>&1"


rule outlier_detection:
    """Flag outliers against the median of the resampled members (romancal OutlierDetectionStep)."""
    input:
        asn=mosaic_upstream("outlier_detection"),
        parameter_file=parameter_file(),
        code=step_script("outlier_detection"),
    output:
        mosaic_asn("outlier_detection"),
    params:
        python=PYTHON,
        values=step_parameters("outlier_detection"),
        parameter_file=parameter_file_option(),
    resources:
        mem_mb=step_memory_mb(3, association_data_mb),
        runtime=step_runtime_min(20, association_data_mb),
    log:
        os.path.join(LOGS, "outlier_detection", "{asn}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "outlier_detection", "{asn}.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} {input.asn:q} {output:q} --workflow-params {params.values:q} "
        "{params.parameter_file} > {log:q} 2>&1"


rule resample:
    """Drizzle the members onto one grid: the Level 3 mosaic (romancal ResampleStep)."""
    input:
        asn=resample_input,
        parameter_file=parameter_file(),
        code=step_script("resample"),
    output:
        MOSAIC_PRODUCT,
    params:
        python=PYTHON,
        values=step_parameters("resample"),
        parameter_file=parameter_file_option(),
    resources:
        mem_mb=step_memory_mb(3, association_data_mb),
        runtime=step_runtime_min(20, association_data_mb),
    log:
        os.path.join(LOGS, "resample", "{product}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "resample", "{product}.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} {input.asn:q} {output:q} --workflow-params {params.values:q} "
        "{params.parameter_file} > {log:q} 2>&1"
