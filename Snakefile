# diffrepro: prepare -> train -> sample -> FID / memorization / analyses -> aggregate -> report.
# params.yaml, with any --config overrides, is validated; diffrepro.pipeline.plan turns its profile into
# jobs and writes each job's spec (results/specs/); every stage is one rule of the same shape.
#   snakemake --profile workflow/profiles/local [--config profile=small]
from snakemake.utils import min_version

min_version("8.0")


configfile: "params.yaml"


include: "workflow/rules/stages.smk"


rule all:
    input:
        PLAN.targets(),
    default_target: True


onsuccess:
    print(f"\nreport: {PLAN.report_file()}")


onerror:
    print("\nA job failed: the last lines of its log are printed above (full logs in results/logs/). "
          "Fix the cause and rerun; finished jobs are kept, a killed training run resumes.")
