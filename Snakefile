# diffrepro workflow: prepare -> train -> sample -> FID / memorization / analyses -> aggregate -> report.
# The jobs come from diffrepro.pipeline.grid.plan(params.yaml, profile), the same expansion that
# generates dvc.yaml. Run:  snakemake --cores all [--config profile=small]
from snakemake.utils import min_version, validate

min_version("8.0")

configfile: "params.yaml"

validate(config, "workflow/schemas/params.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        PLAN.targets(),
    default_target: True
