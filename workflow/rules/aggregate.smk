# aggregate: per-dataset tables (per timepoint / sequence / dataset), plots over time and a report.


rule aggregate:
    input:
        lambda w: dataset_metrics(w.dataset),
    output:
        directory(DATASET_REPORT),
    params:
        title=lambda w: f"{config['report']['title']}: {w.dataset}",
    log:
        f"{LOGS}/aggregate/{{dataset}}.log",
    benchmark:
        f"{BENCH}/aggregate/{{dataset}}.tsv"
    threads: RES["aggregate"]["threads"]
    resources:
        **resources_of("aggregate"),
    conda:
        ENV
    shell:
        "mediar3d aggregate --metrics {input:q} --out {output:q} --title {params.title:q} > {log:q} 2>&1"
