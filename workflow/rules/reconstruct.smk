# reconstruct: instance masks from the fused field (mediar3d), the xy view (xy-stitch) or the iso
# volume (classical), mapped back to the frame's original grid (CTC maskTTT.tif, uint16).
# reconstruct.scheduler (an address) sends the mediar3d method's flow following to a dask.distributed
# cluster; the job's own threads then only read the field and assemble the labels.

RECONSTRUCT = config["reconstruct"]
RECONSTRUCT_INPUT = {"mediar3d": FIELD, "xy-stitch": VIEWS, "classical": ISO}[METHOD]


rule reconstruct:
    input:
        RECONSTRUCT_INPUT,
    output:
        MASK,
    params:
        method=METHOD,
        boundary=RECONSTRUCT["boundary"],
        options=" ".join(filter(None, [option("--prob-threshold", RECONSTRUCT["prob_threshold"]),
                                       option("--min-size", RECONSTRUCT["min_size"]),
                                       option("--block", RECONSTRUCT["block"]),
                                       option("--scheduler", RECONSTRUCT["scheduler"])])),
    log:
        f"{LOGS}/reconstruct/{FRAME_LOG}.log",
    benchmark:
        f"{BENCH}/reconstruct/{FRAME_LOG}.tsv"
    threads: RES["reconstruct"]["threads"]
    resources:
        **resources_of("reconstruct"),
    conda:
        ENV
    shell:
        "mediar3d reconstruct --input {input:q} --out {output:q} --method {params.method}"
        " --boundary {params.boundary} {params.options}"
        " --workers {threads} > {log:q} 2>&1"
