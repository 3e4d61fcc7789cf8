# report: <out>/report, the summary over all datasets (`mediar3d aggregate` of every metrics table) with the run's configuration, the stage runtimes (from the
# benchmark files) and the model card: <out>/report/{summary,per_*}.csv, plots/, report.html.


rule report:
    input:
        unpack(report_inputs),
        card=model_card(),
    output:
        report=directory(REPORT),
        config=f"{OUT}/run_config.yaml",
    params:
        config_text=yaml.safe_dump(dict(config), sort_keys=False),
        card=lambda w, input: option("--model-card", input.card or None),
        benchmarks=BENCH,
        title=config["report"]["title"],
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{BENCH}/report/report.tsv"
    threads: RES["report"]["threads"]
    resources:
        **resources_of("report"),
    conda:
        ENV
    shell:
        "printf '%s' {params.config_text:q} > {output.config:q} &&"
        " mediar3d aggregate --metrics {input.metrics:q} --out {output.report:q} --config {output.config:q}"
        " --benchmarks {params.benchmarks:q} {params.card} --title {params.title:q} > {log:q} 2>&1"
