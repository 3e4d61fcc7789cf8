# info: a checkpoint that discovers the sequences, timepoints, GT and voxel sizes of a dataset at run time,
# then deletes the outputs of frames the dataset no longer holds (a frame removed since the last run).


checkpoint info:
    input:
        synth_or_path,
    output:
        json=f"{OUT}/{{dataset}}/info.json",
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
    run:
        shell("mediar3d info {input:q} --json {output.json:q} --on-missing-frame {params.on_missing_frame} > {log:q} 2>&1")
        prune_removed_frames(wildcards.dataset, output.json, log[0])
