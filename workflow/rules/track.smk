# track: link a sequence's masks over time into a valid CTC RES folder (masks relabelled to track
# ids + res_track.txt). Re-runs for the whole sequence when a frame is added.


rule track:
    input:
        sequence_masks,
    output:
        directory(RES_DIR),
    params:
        masks=masks_dir,
    log:
        f"{LOGS}/track/{{dataset}}/{{sequence}}.log",
    benchmark:
        f"{BENCH}/track/{{dataset}}/{{sequence}}.tsv"
    threads: RES["track"]["threads"]
    resources:
        **resources_of("track"),
    conda:
        ENV
    shell:
        "mediar3d track --res {params.masks} --out {output} > {log} 2>&1"
