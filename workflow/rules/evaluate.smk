# evaluate: score one timepoint that has CTC SEG ground truth (one metrics row per GT file).


rule evaluate:
    input:
        mask=MASK,
        gt=gt_files,
    output:
        metrics=METRICS,
        objects=OBJECTS,
    params:
        gt_dir=lambda w: str(sequence_dir(w.dataset, w.sequence).with_name(f"{w.sequence}_GT")),
        timepoint=lambda w: int(w.timepoint),
        method=METHOD,
    log:
        f"{LOGS}/evaluate/{FRAME_LOG}.log",
    benchmark:
        f"{BENCH}/evaluate/{FRAME_LOG}.tsv"
    threads: RES["evaluate"]["threads"]
    resources:
        **resources_of("evaluate"),
    conda:
        ENV
    shell:
        "mediar3d evaluate --res \"$(dirname {input.mask:q})\" --gt {params.gt_dir:q} --frames {params.timepoint}"
        " --out {output.metrics:q} --objects {output.objects:q} --method {params.method:q}"
        " --dataset {wildcards.dataset:q} --sequence {wildcards.sequence:q} > {log:q} 2>&1"
