rule aggregate:
    input:
        job_deps("aggregate"),
    output:
        paths.metrics("{key}"),
    params:
        args=job_args("aggregate"),
        spec=job_spec("aggregate"),
    log:
        "results/logs/aggregate/{key}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.aggregate {params.args} > {log} 2>&1"


rule report:
    input:
        job_deps("report"),
    output:
        md=paths.report_md("{key}"),
        html=paths.report_html("{key}"),
        summary=paths.report_summary("{key}"),
        figures=directory(paths.report_figures("{key}")),
    params:
        args=job_args("report"),
        spec=job_spec("report"),
    log:
        "results/logs/report/{key}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m stages.report {params.args} > {log} 2>&1"
