# track: link a sequence's masks over time into a valid CTC RES folder (masks relabelled to track
# ids + res_track.txt). Re-runs for the whole sequence when a frame is added or removed; it links
# exactly the masks of the frames the input holds now (never a leftover mask of a removed frame).


rule track:
    input:
        sequence_masks,
    output:
        directory(RES_DIR),
    params:
        on_missing_frame=config["on_missing_frame"],
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
        "mediar3d track --masks {input:q} --out {output:q} --on-missing-frame {params.on_missing_frame}"
        " > {log:q} 2>&1"
