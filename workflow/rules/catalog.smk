"""
Source catalogs of the calibrated images (romancal SourceCatalogStep).

REQUIRED INPUTS: results/exposures/{expo}_cal.asdf of every imaging exposure; its APCORR
                 (and, with fit_psf, EPSF) reference from the pool
OUTPUTS:         results/exposures/{expo}_cat.parquet (the catalog) and
                 results/exposures/{expo}_segm.asdf (its segmentation map)
"""


rule source_catalog:
    """Segment the image, measure every source (apertures, PSF fit), write the catalog (romancal SourceCatalogStep)."""
    input:
        unpack(optional_references("source_catalog")),
        image=CAL_PRODUCT,
        apcorr=reference("source_catalog", "apcorr"),
        parameter_file=parameter_file(),
        code=step_script("source_catalog"),
    output:
        catalog=SOURCE_CATALOG,
        segmentation=SEGMENTATION_MAP,
    params:
        python=PYTHON,
        values=step_parameters("source_catalog"),
        parameter_file=parameter_file_option(),
        optional_references=optional_reference_options("source_catalog"),
    resources:
        mem_mb=step_memory_mb(4, exposure_input_mb("image")),
        runtime=step_runtime_min(10, exposure_input_mb("image")),
    log:
        os.path.join(LOGS, "source_catalog", "{expo}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "source_catalog", "{expo}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.image:q} {output.catalog:q} --override-apcorr {input.apcorr:q} "
        "{params.optional_references} --workflow-params {params.values:q} {params.parameter_file} > {log:q} 2>&1"
