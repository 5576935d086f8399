rule prepare:
    output:
        directory(paths.dataset("{key}")),
    params:
        args=job_args("prepare"),
        spec=job_spec("prepare"),
    log:
        "results/logs/prepare/{key}.log",
    benchmark:
        "results/benchmarks/prepare/{key}.tsv"
    resources:
        mem_mb=job_resource("prepare", "mem_mb"),
        runtime=job_resource("prepare", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.prepare {params.args} > {log} 2>&1"


rule fidref:
    output:
        paths.fidref("{key}"),
    params:
        args=job_args("fidref"),
        spec=job_spec("fidref"),
    log:
        "results/logs/fidref/{key}.log",
    benchmark:
        "results/benchmarks/fidref/{key}.tsv"
    threads: job_resource("fidref", "threads", 1)
    resources:
        cpus_per_task=job_resource("fidref", "threads", 1),   # sbatch --cpus-per-task on SLURM
        gpu=job_resource("fidref", "gpu"),
        mem_mb=job_resource("fidref", "mem_mb"),
        runtime=job_resource("fidref", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.fidref {params.args} > {log} 2>&1"


rule targetvar:
    input:
        job_deps("targetvar"),
    output:
        table=paths.targetvar("{key}"),
        figure=paths.targetvar_fig("{key}"),
    params:
        args=job_args("targetvar"),
        spec=job_spec("targetvar"),
    log:
        "results/logs/targetvar/{key}.log",
    benchmark:
        "results/benchmarks/targetvar/{key}.tsv"
    threads: job_resource("targetvar", "threads", 1)
    resources:
        cpus_per_task=job_resource("targetvar", "threads", 1),   # sbatch --cpus-per-task on SLURM
        mem_mb=job_resource("targetvar", "mem_mb"),
        runtime=job_resource("targetvar", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.targetvar {params.args} > {log} 2>&1"
