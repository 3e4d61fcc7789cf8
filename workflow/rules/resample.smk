# resample: normalize one frame and resample it to isotropic voxels (iso.zarr).


rule resample:
    input:
        frame=frame_input,
        model=MODEL_FILES,
    output:
        intermediate(ISO),
    params:
        timepoint=lambda w: int(w.timepoint),
        options=resample_options,
    log:
        f"{LOGS}/resample/{FRAME_LOG}.log",
    benchmark:
        f"{BENCH}/resample/{FRAME_LOG}.tsv"
    threads: RES["resample"]["threads"]
    resources:
        **resources_of("resample"),
        gpu=GPUS,
    conda:
        ENV
    shell:
        "mediar3d resample --input {input.frame:q} --timepoint {params.timepoint} --out {output:q} {params.options}"
        " --threads {threads} > {log:q} 2>&1"
