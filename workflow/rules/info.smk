# info: a checkpoint that discovers the sequences, timepoints, GT and voxel sizes of a dataset at run time.


checkpoint info:
    input:
        synth_or_path,
    output:
        f"{OUT}/{{dataset}}/info.json",
    params:
        # an added frame or GT file changes the listing digest and so re-runs this job
        listing=dataset_listing,
        on_missing_frame=config["on_missing_frame"],
    log:
        f"{LOGS}/info/{{dataset}}.log",
    benchmark:
        f"{BENCH}/info/{{dataset}}.tsv"
    threads: RES["info"]["threads"]
    resources:
        **resources_of("info"),
    conda:
        ENV
    shell:
        "mediar3d info {input} --json {output} --on-missing-frame {params.on_missing_frame} > {log} 2>&1"
