# synth: the embedded default data, a synthetic 3D+t dataset in CTC layout (raw frames + SEG GT).


rule synth:
    output:
        directory(f"{OUT}/data/{{dataset}}"),
    params:
        preset=lambda w: DATASETS[w.dataset]["synth"]["preset"],
        seed=lambda w: DATASETS[w.dataset]["synth"]["seed"],
        options=synth_options,
    log:
        f"{LOGS}/synth/{{dataset}}.log",
    benchmark:
        f"{BENCH}/synth/{{dataset}}.tsv"
    threads: RES["synth"]["threads"]
    resources:
        **resources_of("synth"),
    conda:
        ENV
    shell:
        "mediar3d synth --preset {params.preset:q} --seed {params.seed} --out {output:q} {params.options} > {log:q} 2>&1"
