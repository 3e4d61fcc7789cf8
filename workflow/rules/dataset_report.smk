# dataset_report: <out>/<dataset>/report, the dataset's tables (per timepoint / sequence / dataset), plots over
# time and an HTML report (`mediar3d aggregate` of the dataset's metrics).


rule dataset_report:
    input:
        lambda w: dataset_metrics(w.dataset),
    output:
        directory(DATASET_REPORT),
    params:
        title=lambda w: f"{config['report']['title']}: {w.dataset}",
    log:
        f"{LOGS}/dataset_report/{{dataset}}.log",
    benchmark:
        f"{BENCH}/dataset_report/{{dataset}}.tsv"
    threads: RES["dataset_report"]["threads"]
    resources:
        **resources_of("dataset_report"),
    conda:
        ENV
    shell:
        "mediar3d aggregate --metrics {input:q} --out {output:q} --title {params.title:q} > {log:q} 2>&1"
