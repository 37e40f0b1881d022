"""
What `snakemake --report report.html` shows besides Snakemake's own run statistics:
quicklooks of every _cal and _i2d, the campaign provenance table, every job's benchmark,
and the pool, quarantine and association tables (marked in their own rules).

REQUIRED INPUTS: the _cal and _i2d products (exposure.smk, mosaic.smk)
OUTPUTS:         results/quicklook/<product>.png, results/provenance.csv,
                 results/benchmarks.csv
"""


# Cheap tables gathered from every product: on a cluster, not worth a job each.
localrules:
    provenance,
    benchmarks,
    quarantine_table,


rule quicklook_cal:
    """A PNG of a calibrated image for the report."""
    input:
        product=CAL_PRODUCT,
        catalog=cal_catalog,
        code=step_script("quicklook"),
    output:
        report(
            os.path.join(RESULTS, "quicklook", "{expo}_cal.png"),
            caption="../report/quicklook.rst",
            category="Quicklooks",
            subcategory="Level 2 (_cal)",
            labels={"product": "{expo}_cal"},
        ),
    params:
        python=PYTHON,
        catalog=cal_catalog_option,
    resources:
        mem_mb=step_memory_mb(2),
        runtime=step_runtime_min(1),
    log:
        os.path.join(LOGS, "quicklook_cal", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "quicklook_cal", "{expo}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.product:q} {output:q} {params.catalog} > {log:q} 2>&1"


rule quicklook_mosaic:
    """A PNG of a mosaic for the report."""
    input:
        product=MOSAIC_PRODUCT,
        catalog=mosaic_catalog,
        code=step_script("quicklook"),
    output:
        report(
            os.path.join(RESULTS, "quicklook", "{product}_i2d.png"),
            caption="../report/quicklook.rst",
            category="Quicklooks",
            subcategory="Level 3 (_i2d)",
            labels={"product": "{product}_i2d"},
        ),
    params:
        python=PYTHON,
        catalog=mosaic_catalog_option,
    resources:
        mem_mb=step_memory_mb(2),
        runtime=step_runtime_min(1),
    log:
        os.path.join(LOGS, "quicklook_mosaic", "{product}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "quicklook_mosaic", "{product}.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} {input.product:q} {output:q} {params.catalog} > {log:q} 2>&1"


rule quicklook_multiband:
    """The detection image of a multiband catalog with its sources circled, and their magnitudes."""
    input:
        product=MULTIBAND_SEGMENTATION,
        catalog=MULTIBAND_CATALOG,
        code=step_script("quicklook"),
    output:
        report(
            os.path.join(RESULTS, "quicklook", "{cell}_multiband.png"),
            caption="../report/catalog.rst",
            category="Catalogs",
            subcategory="Multiband",
            labels={"catalog": "{cell}_cat"},
        ),
    params:
        python=PYTHON,
    resources:
        mem_mb=step_memory_mb(2),
        runtime=step_runtime_min(1),
    log:
        os.path.join(LOGS, "quicklook_multiband", "{cell}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "quicklook_multiband", "{cell}.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} {input.product:q} {output:q} --catalog {input.catalog:q} > {log:q} 2>&1"


rule provenance:
    """The campaign provenance table: code, parameters, CRDS context and references of every product."""
    input:
        exposures=exposure_products,
        mosaics=final_mosaics,
        code=step_script("provenance_table"),
    output:
        report(
            PROVENANCE_TABLE,
            caption="../report/provenance.rst",
            category="Tables",
            labels={"table": "provenance"},
        ),
    params:
        python=PYTHON,
    resources:
        # every product's metadata, one at a time
        mem_mb=step_memory_mb(0),
        runtime=metadata_runtime_min(0.2),
    log:
        os.path.join(LOGS, "provenance.log"),
    benchmark:
        os.path.join(BENCHMARKS, "provenance.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} {input.exposures:q} {input.mosaics:q} --output {output:q} "
        "> {log:q} 2>&1"


rule benchmarks:
    """Every job's benchmark record in one table: every other job's output is an input, so it
    runs last (its own record is the previous run's)."""
    input:
        exposures=exposure_products,
        mosaics=final_mosaics,
        groundtest=groundtest_products,
        quicklook_images=quicklook_images,
        quicklook_mosaics=quicklook_mosaics,
        quicklook_multiband=quicklook_multiband,
        provenance=PROVENANCE_TABLE,
        code=step_script("benchmark_table"),
    output:
        report(
            BENCHMARK_TABLE,
            caption="../report/benchmarks.rst",
            category="Tables",
            labels={"table": "benchmarks"},
        ),
    params:
        python=PYTHON,
        folder=BENCHMARKS,
        # relative to the working directory: a moved campaign has nothing to redo
        warm=f"--warm {shlex.quote(workdir_relative(WARM_DIR))}" if WARM_DIR else "",
    resources:
        # one small record per job
        mem_mb=step_memory_mb(0),
        runtime=metadata_runtime_min(0.02),
    log:
        os.path.join(LOGS, "benchmarks.log"),
    benchmark:
        os.path.join(BENCHMARKS, "benchmarks.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} {params.folder:q} --output {output:q} {params.warm} > {log:q} 2>&1"


rule quarantine_table:
    """Every input left out of the campaign: rejected by the pool, or failed after it."""
    input:
        quarantine=POOL_QUARANTINE,
        pool=os.path.join(RESULTS, "pool.csv"),
        ledger=failure_ledger_file(),
        code=step_script("quarantine_table"),
    output:
        report(
            QUARANTINE_REPORT,
            caption="../report/quarantine.rst",
            category="Tables",
            labels={"table": "quarantine"},
        ),
    params:
        python=PYTHON,
        ledger=failure_ledger_option(),
    resources:
        # two small tables: the base memory and time of every job
        mem_mb=step_memory_mb(0),
        runtime=step_runtime_min(0),
    log:
        os.path.join(LOGS, "quarantine_table.log"),
    benchmark:
        os.path.join(BENCHMARKS, "quarantine_table.tsv")
    conda:
        "../../envs/mosaic.yaml"
    shell:
        "{params.python} {input.code:q} {input.quarantine:q} --pool {input.pool:q} {params.ledger} "
        "--output {output:q} > {log:q} 2>&1"
