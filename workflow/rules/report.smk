# report: the summary over all datasets with the run's configuration, the stage runtimes (from the
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
        "printf '%s' {params.config_text:q} > {output.config} &&"
        " mediar3d aggregate --metrics {input.metrics} --out {output.report} --config {output.config}"
        " --benchmarks {params.benchmarks} {params.card} --title {params.title:q} > {log} 2>&1"
