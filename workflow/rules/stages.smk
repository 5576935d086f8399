# Every stage is one rule of one shape: its job's spec file, input paths and code in; its outputs out.
# Jobs and their commands come from the planner (diffrepro.pipeline.plan), the same plan dvc.yaml is
# generated from. A job reruns when its spec changed (the planner rewrites a spec only when its content
# changes), when an input is newer, or when a file of its code closure changed (code files are inputs;
# Snakemake compares their checksums, so touching or reverting a file reruns nothing).
import sys

from diffrepro.pipeline.code import import_closure
from diffrepro.pipeline.params import read_yaml, typed_overrides, validate_params
from diffrepro.pipeline.plan import OUTPUTS, STAGES, is_directory, paths, plan, write_specs

PY = sys.executable

config.update(typed_overrides(config, read_yaml("params.yaml")))
validate_params(config, "params.yaml (with --config overrides)")
PLAN = plan(config)
write_specs(PLAN)
CODE = {stage: import_closure(f"stages.{stage}") for stage in STAGES}
DIRECTORIES = PLAN.directory_outputs()


wildcard_constraints:
    key="[^/]+",


def _input_path(path):
    """A file inside another job's output folder (a run's snapshot) is an input through that folder."""
    return next((d for d in DIRECTORIES if path.startswith(d + "/")), path)


def job_inputs(stage):
    def inputs(wildcards):
        job = PLAN[stage][wildcards.key]
        named = {name: _input_path(p) for name, p in job.inputs.items()}
        return {"spec": job.spec_path, **named, "code": CODE[stage]}

    return inputs


def job_command(stage):
    # The command names only paths and where to run (device, where raw data lies): what the job computes is
    # its spec, an input. Taking `input` as an argument makes Snakemake count it as derived from the
    # inputs, so its params trigger ignores it: the same dataset elsewhere, or another device, reruns nothing.
    def command(wildcards, input):
        job = PLAN[stage][wildcards.key]
        return f"{PY} -m {job.module} " + " ".join(job.argv)

    return command


def job_resource(stage, name, default=0):
    return lambda wildcards: PLAN[stage][wildcards.key].resources.get(name, default)


def job_omp_threads(stage):
    return lambda wildcards: max(1, PLAN[stage][wildcards.key].resources.get("threads", 1)
                                 // PLAN[stage][wildcards.key].processes)


# On failure, the job's log tail goes to the console (the whole log stays in results/logs/).
SHELL = ("OMP_NUM_THREADS={params.omp} {params.cmd} > {log} 2>&1 || {{ status=$?; "
         "echo '--- {rule} {wildcards.key} failed; last lines of {log}:' >&2; tail -n 30 {log} >&2; exit $status; }}")


for stage in STAGES:

    rule:
        name:
            stage
        message:
            f"{stage} {{wildcards.key}}"
        input:
            unpack(job_inputs(stage)),
        output:
            **{n: directory(p) if is_directory(p) else p for n, p in OUTPUTS[stage]("{key}").items()},
        params:
            cmd=job_command(stage),
            omp=job_omp_threads(stage),
        log:
            paths.log(stage, "{key}"),
        benchmark:
            f"results/benchmarks/{stage}/{{key}}.tsv"
        threads: job_resource(stage, "threads", 1)
        resources:
            cpus_per_task=job_resource(stage, "threads", 1),  # sbatch --cpus-per-task on SLURM
            gpu=job_resource(stage, "gpu"),
            mem_mb=job_resource(stage, "mem_mb", 4000),
            runtime=job_resource(stage, "runtime", 30),
        shell:
            SHELL
