"""
Source catalogs of the calibrated images and the mosaics (romancal SourceCatalogStep), and
of the sky cells mosaicked in several filters (romancal MultibandCatalogStep).

REQUIRED INPUTS: results/exposures/{expo}_cal.asdf of every imaging exposure; its APCORR
                 (and, with fit_psf, EPSF) reference from the pool;
                 results/mosaics/{product}_i2d.asdf of every mosaic
OUTPUTS:         results/exposures/{expo}_cat.parquet (the catalog) and
                 results/exposures/{expo}_segm.asdf (its segmentation map);
                 results/mosaics/{product}_cat.parquet and _segm.asdf;
                 results/multiband/{cell}_cat.parquet and _segm.asdf
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


rule source_catalog_mosaic:
    """The catalog of a mosaic (Level 3), its PSF the detector's drizzled onto the mosaic's grid."""
    input:
        image=MOSAIC_PRODUCT,
        parameter_file=parameter_file(),
        code=step_script("source_catalog"),
    output:
        catalog=MOSAIC_CATALOG,
        segmentation=MOSAIC_SEGMENTATION,
    params:
        python=PYTHON,
        values=step_parameters("source_catalog"),
        parameter_file=parameter_file_option(),
    resources:
        mem_mb=step_memory_mb(4),
        runtime=step_runtime_min(10),
    log:
        os.path.join(LOGS, "source_catalog_mosaic", "{product}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "source_catalog_mosaic", "{product}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.image:q} {output.catalog:q} "
        "--workflow-params {params.values:q} {params.parameter_file} > {log:q} 2>&1"


rule multiband_catalog:
    """One catalog of a sky cell in all its filters: detection on their combined mosaics, forced
    photometry in each (romancal MultibandCatalogStep)."""
    input:
        mosaics=multiband_mosaics,
        parameter_file=parameter_file(),
        code=step_script("multiband_catalog"),
    output:
        catalog=MULTIBAND_CATALOG,
        segmentation=MULTIBAND_SEGMENTATION,
    params:
        python=PYTHON,
        values=step_parameters("source_catalog"),
        parameter_file=parameter_file_option(),
    resources:
        mem_mb=step_memory_mb(4),
        runtime=step_runtime_min(10),
    log:
        os.path.join(LOGS, "multiband_catalog", "{cell}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "multiband_catalog", "{cell}.tsv")
    conda:
        "../../envs/image.yaml"
    shell:
        "{params.python} {input.code:q} {input.mosaics:q} --output {output.catalog:q} "
        "--workflow-params {params.values:q} {params.parameter_file} > {log:q} 2>&1"
