rule sample:
    input:
        job_deps("sample"),
    output:
        samples=paths.samples("{key}"),
        grid=paths.sample_grid("{key}"),
        info=paths.sample_info("{key}"),
    params:
        args=job_args("sample"),
        spec=job_spec("sample"),
    log:
        "results/logs/sample/{key}.log",
    benchmark:
        "results/benchmarks/sample/{key}.tsv"
    threads: job_resource("sample", "threads", 1)
    resources:
        cpus_per_task=job_resource("sample", "threads", 1),   # sbatch --cpus-per-task on SLURM
        gpu=job_resource("sample", "gpu"),
        mem_mb=job_resource("sample", "mem_mb"),
        runtime=job_resource("sample", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.sample {params.args} --no-progress > {log} 2>&1"


rule fid:
    input:
        job_deps("fid"),
    output:
        paths.fid("{key}"),
    params:
        args=job_args("fid"),
        spec=job_spec("fid"),
    log:
        "results/logs/fid/{key}.log",
    benchmark:
        "results/benchmarks/fid/{key}.tsv"
    threads: job_resource("fid", "threads", 1)
    resources:
        cpus_per_task=job_resource("fid", "threads", 1),   # sbatch --cpus-per-task on SLURM
        gpu=job_resource("fid", "gpu"),
        mem_mb=job_resource("fid", "mem_mb"),
        runtime=job_resource("fid", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.fid {params.args} > {log} 2>&1"


rule memorize:
    input:
        job_deps("memorize"),
    output:
        summary=paths.memorize("{key}"),
        table=paths.memorize_table("{key}"),
        figure=paths.memorize_fig("{key}"),
    params:
        args=job_args("memorize"),
        spec=job_spec("memorize"),
    log:
        "results/logs/memorize/{key}.log",
    benchmark:
        "results/benchmarks/memorize/{key}.tsv"
    threads: job_resource("memorize", "threads", 1)
    resources:
        cpus_per_task=job_resource("memorize", "threads", 1),   # sbatch --cpus-per-task on SLURM
        gpu=job_resource("memorize", "gpu"),
        mem_mb=job_resource("memorize", "mem_mb"),
        runtime=job_resource("memorize", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.memorize {params.args} > {log} 2>&1"
