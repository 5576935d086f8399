# Generalization and memorization analyses (per checkpoint, per run, 2D toy study).
rule gap:
    input:
        job_deps("gap"),
    output:
        table=paths.gap("{key}"),
    params:
        args=job_args("gap"),
        spec=job_spec("gap"),
    log:
        "results/logs/gap/{key}.log",
    benchmark:
        "results/benchmarks/gap/{key}.tsv"
    threads: job_resource("gap", "threads", 1)
    resources:
        cpus_per_task=job_resource("gap", "threads", 1),   # sbatch --cpus-per-task on SLURM
        gpu=job_resource("gap", "gpu"),
        mem_mb=job_resource("gap", "mem_mb"),
        runtime=job_resource("gap", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.gap {params.args} > {log} 2>&1"


rule memtrace:
    input:
        job_deps("memtrace"),
    output:
        summary=paths.memtrace("{key}"),
    params:
        args=job_args("memtrace"),
        spec=job_spec("memtrace"),
    log:
        "results/logs/memtrace/{key}.log",
    benchmark:
        "results/benchmarks/memtrace/{key}.tsv"
    threads: job_resource("memtrace", "threads", 1)
    resources:
        cpus_per_task=job_resource("memtrace", "threads", 1),   # sbatch --cpus-per-task on SLURM
        gpu=job_resource("memtrace", "gpu"),
        mem_mb=job_resource("memtrace", "mem_mb"),
        runtime=job_resource("memtrace", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.memtrace {params.args} > {log} 2>&1"


rule trajectory:
    input:
        job_deps("trajectory"),
    output:
        table=paths.trajectory("{key}"),
        figure=paths.trajectory_fig("{key}"),
    params:
        args=job_args("trajectory"),
        spec=job_spec("trajectory"),
    log:
        "results/logs/trajectory/{key}.log",
    benchmark:
        "results/benchmarks/trajectory/{key}.tsv"
    threads: job_resource("trajectory", "threads", 1)
    resources:
        cpus_per_task=job_resource("trajectory", "threads", 1),   # sbatch --cpus-per-task on SLURM
        gpu=job_resource("trajectory", "gpu"),
        mem_mb=job_resource("trajectory", "mem_mb"),
        runtime=job_resource("trajectory", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.trajectory {params.args} > {log} 2>&1"


rule toystudy:
    input:
        job_deps("toystudy"),
    output:
        table=paths.toystudy("{key}"),
        flow=paths.toystudy_flow("{key}"),
        sweep=paths.toystudy_sweep("{key}"),
    params:
        args=job_args("toystudy"),
        spec=job_spec("toystudy"),
    log:
        "results/logs/toystudy/{key}.log",
    benchmark:
        "results/benchmarks/toystudy/{key}.tsv"
    threads: job_resource("toystudy", "threads", 1)
    resources:
        cpus_per_task=job_resource("toystudy", "threads", 1),   # sbatch --cpus-per-task on SLURM
        gpu=job_resource("toystudy", "gpu"),
        mem_mb=job_resource("toystudy", "mem_mb"),
        runtime=job_resource("toystudy", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.toystudy {params.args} > {log} 2>&1"
