# train: train the 2D network on annotated CTC datasets (xy, xz and yz slices of every volume). Not
# part of the default target: `snakemake --cores all train` (settings under `train:` in the config).

TRAIN = config["train"]


rule train:
    input:
        data=TRAIN["data"],
        val_data=TRAIN["val_data"],
        init=TRAIN["init"] or [],
    output:
        TRAIN["out"],
    params:
        encoder=TRAIN["encoder"],
        epochs=TRAIN["epochs"],
        seed=TRAIN["seed"],
        device=config["device"],
        options=" ".join(filter(None, [option("--val-data", TRAIN["val_data"] or None),
                                       option("--steps-per-epoch", TRAIN["steps_per_epoch"]),
                                       option("--batch", TRAIN["batch"]), option("--crop", TRAIN["crop"]),
                                       option("--init", TRAIN["init"]), option("--lr", TRAIN["lr"]),
                                       option("--diameter-px", TRAIN["diameter_px"]),
                                       option("--context-px", TRAIN["context_px"] or None),
                                       option("--select-by", TRAIN["select_by"]),
                                       option("--augment", TRAIN["augment"]),
                                       option("--max-minutes", TRAIN["max_minutes"])])),
    log:
        f"{LOGS}/train/train.log",
    benchmark:
        f"{BENCH}/train/train.tsv"
    threads: RES["train"]["threads"]
    resources:
        **resources_of("train"),
        gpu=GPUS,
    conda:
        ENV
    shell:
        "mediar3d train --data {input.data:q} --out {output:q} --encoder {params.encoder:q} --epochs {params.epochs}"
        " --seed {params.seed} --device {params.device} --threads {threads} --workers {threads} {params.options} --no-progress"
        " > {log:q} 2>&1"
