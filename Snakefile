"""Roman WFI calibration: Level 1 ramps -> Level 2 images -> Level 3 mosaics.

Run:  snakemake --profile profiles/local --configfile my_campaign.yaml
The defaults of every setting are in config/config.yaml (validated against
workflow/schemas/config.schema.yaml); a --configfile or --config overrides them.
"""

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"


# The Level 3 stage of a campaign run in shards (inputs.cal_list) plans no Level 2 job:
# without these rules its _cal products are plain inputs, and no pool is read.
if not CAL_LIST:

    include: "workflow/rules/pool.smk"
    include: "workflow/rules/detector.smk"
    include: "workflow/rules/exposure.smk"
    include: "workflow/rules/groundtest.smk"


include: "workflow/rules/mosaic.smk"
# Level 2 and Level 3 catalogs: the Level 2 rule is planned only for the _cal products this run makes.
include: "workflow/rules/catalog.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


onstart:
    remove_leftovers()


onerror:
    after_failed_run()


rule all:
    default_target: True
    input:
        exposures=exposure_products,
        mosaics=final_mosaics,
        catalogs=source_catalogs,
        mosaic_catalogs=mosaic_catalogs,
        multiband_catalogs=multiband_catalogs,
        groundtest=groundtest_products,
        quicklook_images=quicklook_images,
        quicklook_mosaics=quicklook_mosaics,
        quicklook_multiband=quicklook_multiband,
        provenance=PROVENANCE_TABLE,
        benchmarks=BENCHMARK_TABLE,
        quarantine=quarantine_report(),
