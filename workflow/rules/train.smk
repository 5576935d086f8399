# Checkpoints live in results/runs/<key>/ckpt, outside the declared outputs, so a rerun after a
# crash or kill (snakemake --rerun-incomplete) resumes instead of starting over.
rule train:
    input:
        job_deps("train"),
    output:
        model=paths.model("{key}"),
        metrics=paths.train_metrics("{key}"),
    params:
        args=job_args("train"),
        spec=job_spec("train"),
        module=lambda w: PLAN["train"][w.key].module,
        omp=lambda w: max(1, PLAN["train"][w.key].resources["threads"] // PLAN["train"][w.key].processes),
    log:
        "results/logs/train/{key}.log",
    benchmark:
        "results/benchmarks/train/{key}.tsv"
    threads: job_resource("train", "threads", 1)
    resources:
        cpus_per_task=job_resource("train", "threads", 1),   # sbatch --cpus-per-task on SLURM
        gpu=job_resource("train", "gpu"),
        mem_mb=job_resource("train", "mem_mb"),
        runtime=job_resource("train", "runtime"),
    shell:
        "OMP_NUM_THREADS={params.omp} {PY} -m {params.module} {params.args} --no-progress > {log} 2>&1"
