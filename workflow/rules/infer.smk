# infer: the 2D network on every xy, xz and yz slice of the iso volume (views.zarr).
# Method xy-stitch predicts the xy view only; method classical does not run the network.

INFER = config["infer"]


rule infer:
    input:
        iso=ISO,
        model=MODEL_FILES,
    output:
        intermediate(VIEWS),
    params:
        model=MODEL_OPTIONS,
        views="xy" if METHOD == "xy-stitch" else "xy xz yz",
        tile=INFER["tile"],
        overlap=INFER["overlap"],
        batch=INFER["batch"],
        tta="--tta" if INFER["tta"] else "",
        device=config["device"],
        precision=config["precision"],
    log:
        f"{LOGS}/infer/{FRAME_LOG}.log",
    benchmark:
        f"{BENCH}/infer/{FRAME_LOG}.tsv"
    threads: RES["infer"]["threads"]
    resources:
        **resources_of("infer"),
        gpu=GPUS,
    conda:
        ENV
    shell:
        "mediar3d infer --input {input.iso:q} {params.model} --out {output:q} --views {params.views}"
        " --tile {params.tile} --overlap {params.overlap} --batch {params.batch} {params.tta}"
        " --device {params.device} --precision {params.precision} --threads {threads} --no-progress > {log:q} 2>&1"
