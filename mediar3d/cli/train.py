"""`mediar3d train`: train the 2D MEDIAR network on xy/xz/yz slices of annotated CTC volumes.

Writes the checkpoint CKPT and, next to it, `<CKPT stem>_train/` with the resumable state
(state.pt), log.csv, log.json and loss_curve.png.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mediar3d.io.atomic import FILE

OUTPUTS = {"out": FILE}
INPUTS = ("data", "val_data")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mediar3d.model import DECODERS, ENCODERS
    from mediar3d.pipeline import PRECISIONS
    from mediar3d.train.config import AUGMENTS, SELECT_BY
    from mediar3d.train import TrainConfig

    d = TrainConfig()
    parser.add_argument("--data", required=True, nargs="+", type=Path, metavar="DATASET_DIR",
                        help="CTC dataset folders (made by `mediar3d synth` or real) with full-3D GT man_segTTT.tif")
    parser.add_argument("--val-data", nargs="+", type=Path, metavar="DATASET_DIR",
                        help="held-out CTC datasets for the per-epoch validation (default: the last training volume)")
    parser.add_argument("--out", required=True, type=Path, metavar="CKPT", help="checkpoint file to write")
    parser.add_argument("--encoder", default=d.encoder, choices=ENCODERS, help=f"MiT encoder (default {d.encoder})")
    parser.add_argument("--decoder", default=d.decoder, choices=sorted(DECODERS),
                        help=f"decoder channel configuration ('mediar' = MEDIAR's own; default {d.decoder})")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    parser.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch,
                        help=f"optimizer steps per epoch (default {d.steps_per_epoch})")
    parser.add_argument("--batch", type=int, default=d.batch, help=f"crops per batch (default {d.batch})")
    parser.add_argument("--crop", type=int, default=d.crop, help=f"crop edge in pixels, multiple of 32 (default {d.crop})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr})")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay (default {d.weight_decay})")
    parser.add_argument("--diameter-px", type=float, default=d.train_diameter_px,
                        help=f"object diameter (px) volumes are rescaled to before slicing (default {d.train_diameter_px})")
    parser.add_argument("--context-px", type=int, default=d.context_px, metavar="PX",
                        help="2.5D input: also give the network the planes PX iso voxels below and above each "
                             "slice (3 input channels; --init with a 1-channel model puts it on the centre plane). "
                             f"0 = 2D input (default {d.context_px})")
    parser.add_argument("--max-slices-per-view", type=int, default=d.max_slices_per_view,
                        help=f"slices with objects kept per view and volume (default {d.max_slices_per_view})")
    parser.add_argument("--val-slices-per-view", type=int, default=d.val_slices_per_view,
                        help=f"validation slices per view scored every epoch (default {d.val_slices_per_view})")
    parser.add_argument("--select-by", default=d.select_by, choices=SELECT_BY,
                        help="which epoch --out holds: the last, or 'seg': the best mean 3D SEG of the validation "
                             "volumes through the pipeline, the --init weights counting as epoch 0 (the last epoch "
                             "then goes to <CKPT stem>_train/last.pt; costs one segmentation of each validation "
                             "volume per epoch)")
    parser.add_argument("--augment", default=d.augment, choices=AUGMENTS,
                        help="intensity augmentation: 'standard' (contrast, gamma 0.6-1.6, blur, noise: the shipped "
                             "model's) or 'robust' (also camera saturation, gamma 0.4-2.5 and illumination ramps: sturdier "
                             "on such artefacts, but it drew real nuclei too large in bench/results/"
                             f"stage6_robust_augment.md; default {d.augment})")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    parser.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this wall-time budget")
    parser.add_argument("--stop-epoch", type=int, metavar="N",
                        help="stop after epoch N (the learning-rate schedule still spans --epochs)")
    parser.add_argument("--fp32-weights", action="store_true", help="store float32 weights (default float16)")
    parser.add_argument("--init", type=Path, metavar="CKPT",
                        help="start from this checkpoint's weights (same encoder/decoder; fine-tuning)")
    parser.add_argument("--cache", type=Path, metavar="DIR", help="cache of per-slice flow targets (npz per volume)")
    parser.add_argument("--resume", action="store_true", help="continue from <CKPT stem>_train/state.pt when present")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="autocast of the training step: auto = fp16 (with loss scaling) on CUDA, bf16 on a CPU "
                             "with native bf16 units (Intel AMX, AVX-512 BF16; 1.39x faster on an AMX Xeon, same "
                             "validation SEG), else fp32; weights and optimizer stay float32 (default auto)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch CPU threads (default min(2, cores))")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes preparing the training volumes (slices and flow targets; default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from mediar3d.infer import set_threads
    from mediar3d.train import TrainConfig, train

    set_threads(max(1, args.threads))
    try:
        config = TrainConfig(encoder=args.encoder, decoder=args.decoder, crop=args.crop, batch=args.batch,
                             epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, lr=args.lr,
                             weight_decay=args.weight_decay, train_diameter_px=args.diameter_px,
                             max_slices_per_view=args.max_slices_per_view, seed=args.seed,
                             val_slices_per_view=args.val_slices_per_view,
                             half_weights=not args.fp32_weights, max_minutes=args.max_minutes,
                             init_checkpoint=str(args.init) if args.init else None,
                             stop_epoch=args.stop_epoch, context_px=args.context_px, select_by=args.select_by,
                             augment=args.augment)
    except ValueError as exc:
        from mediar3d.errors import ConfigError

        raise ConfigError(str(exc)) from exc
    last = train(args.data, args.out, config, val_dirs=args.val_data, device=args.device, resume=args.resume,
                 cache_dir=args.cache, progress=not args.no_progress, workers=max(1, args.workers),
                 precision=args.precision)
    print(f"wrote {args.out}: epoch {last.get('epoch')}, val loss {last.get('val_loss', float('nan')):.4f}, "
          f"val AP@0.5 {last.get('val_ap50', float('nan')):.3f}")
    if args.select_by == "seg":
        from mediar3d.model import read_checkpoint

        kept = read_checkpoint(args.out)["meta"]
        print(f"{args.out} holds epoch {kept.get('selected_epoch')} (val 3D SEG {kept.get('validation_seg', float('nan')):.4f})")
    return 0
