# omezarr: one OME-Zarr per sequence (CTC folder or OME-Zarr input) with the image and the result
# masks under labels/cells.


rule omezarr:
    input:
        res=lambda w: res_output(w.dataset, w.sequence),
        frames=sequence_frames,
    output:
        directory(OME_ZARR),
    params:
        source=lambda w: option("--image" if DATASET_KINDS[w.dataset] == "ome-zarr" else "--ctc",
                                str(sequence_dir(w.dataset, w.sequence))),
        res_dir=lambda w: RES_DIR.format(dataset=w.dataset, sequence=w.sequence),
        voxel_size=lambda w: option("--voxel-size", DATASETS[w.dataset]["voxel_size"]),
        on_missing_frame=config["on_missing_frame"],
    log:
        f"{LOGS}/omezarr/{{dataset}}/{{sequence}}.log",
    benchmark:
        f"{BENCH}/omezarr/{{dataset}}/{{sequence}}.tsv"
    threads: RES["omezarr"]["threads"]
    resources:
        **resources_of("omezarr"),
    conda:
        ENV
    shell:
        "mediar3d to-omezarr {params.source} --res {params.res_dir:q} --out {output:q}"
        " {params.voxel_size} --on-missing-frame {params.on_missing_frame} > {log:q} 2>&1"
