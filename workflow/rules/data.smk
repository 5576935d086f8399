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
    threads: 2
    resources:
        gpu=job_resource("fidref", "gpu"),
        mem_mb=job_resource("fidref", "mem_mb"),
        runtime=job_resource("fidref", "runtime"),
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.fidref {params.args} > {log} 2>&1"
