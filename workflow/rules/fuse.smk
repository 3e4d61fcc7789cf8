# fuse: the three views into one (dz, dy, dx, prob) flow field (field.zarr).


rule fuse:
    input:
        VIEWS,
    output:
        intermediate(FIELD),
    log:
        f"{LOGS}/fuse/{FRAME_LOG}.log",
    benchmark:
        f"{BENCH}/fuse/{FRAME_LOG}.tsv"
    threads: RES["fuse"]["threads"]
    resources:
        **resources_of("fuse"),
    conda:
        ENV
    shell:
        "mediar3d fuse --input {input:q} --out {output:q} > {log:q} 2>&1"
