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
    log:
        "results/logs/train/{key}.log",
    benchmark:
        "results/benchmarks/train/{key}.tsv"
    threads: job_resource("train", "threads", 1)
    resources:
        gpu=job_resource("train", "gpu"),
        mem_mb=job_resource("train", "mem_mb"),
        runtime=job_resource("train", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.train {params.args} --no-progress > {log} 2>&1"
