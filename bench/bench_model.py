"""Benchmark of the MEDIAR network on CPU: parameters, forward throughput and training steps, and
the accuracy of trained checkpoints.

Speed (unless --skip-speed): for mit_b0, mit_b1 and mit_b2 (decoder "small"), side by side in one run:
- parameters and fp16 checkpoint size,
- forward throughput in slices/s at 256x256, batch 8, inference mode,
- training steps/s (forward + backward + AdamW, batch 8 of 128x128 crops, as the default training).
Ratios are relative to mit_b0. Writes bench/results/bench_model.md (--out).

Accuracy (with `--checkpoint` and `--eval-data`): scores each checkpoint on held-out annotated volumes
(per-slice AP@0.5 of the xy, xz and yz views after 2D mask reconstruction,
`mediar3d.train.evaluate_checkpoint`), one table per checkpoint and --eval-slices value. Each
--checkpoint is `PATH` or `PATH=LABEL` (the label is shown instead of the path). Writes
bench/results/bench_model_accuracy.md (--accuracy-out), so running one part never erases the other's
report.

Run: .venv/bin/python bench/bench_model.py [--threads 2] [--reps 3]
     .venv/bin/python bench/bench_model.py --skip-speed --checkpoint CKPT[=LABEL] ... --eval-data DIR ...
         [--eval-slices 16 ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.model import build_model, count_parameters, save_checkpoint  # noqa: E402
from mediar3d.train import segmentation_loss  # noqa: E402
from benchutil import best_of, header, write_report  # noqa: E402  (bench/ is the script's folder)

ENCODERS = ("mit_b0", "mit_b1", "mit_b2")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    label: str


def checkpoint_arg(text: str) -> Checkpoint:
    """`PATH` or `PATH=LABEL` (split at the first `=` unless the whole text names an existing file)."""
    if "=" in text and not Path(text).exists():
        path, label = text.split("=", 1)
        if not path or not label:
            raise argparse.ArgumentTypeError(f"expected PATH or PATH=LABEL, got {text!r}")
        return Checkpoint(Path(path), label)
    return Checkpoint(Path(text), text)


def bench_encoder(encoder: str, reps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(encoder)
    with tempfile.TemporaryDirectory() as tmp:
        size_mb = save_checkpoint(Path(tmp) / "m.pt", model, {}).stat().st_size / 1e6
    model.eval()
    x = torch.randn(8, 1, 256, 256)

    def forward():
        with torch.inference_mode():
            model(x)

    fwd = best_of(forward, reps)[0]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xb, flows, fg = torch.randn(8, 1, 128, 128), torch.randn(8, 2, 128, 128), (torch.rand(8, 1, 128, 128) > 0.5).float()

    def step():
        loss = segmentation_loss(model(xb), flows, fg)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_s = best_of(step, reps)[0]
    return {"encoder": encoder, "params": count_parameters(model), "ckpt_mb": size_mb,
            "slices_per_s": 8 / fwd, "forward_batch_s": fwd, "train_steps_per_s": 1 / train_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_model.md",
                        help="speed report (default bench/results/bench_model.md)")
    parser.add_argument("--checkpoint", nargs="+", type=checkpoint_arg, default=[], metavar="PATH[=LABEL]",
                        help="also score these checkpoints on --eval-data (LABEL is shown instead of PATH)")
    parser.add_argument("--eval-data", nargs="+", type=Path, default=[], help="held-out CTC datasets with full-3D GT")
    parser.add_argument("--eval-slices", nargs="+", type=int, default=[16],
                        help="slices per view and volume, one table per value and checkpoint (default 16)")
    parser.add_argument("--accuracy-out", type=Path, default=ROOT / "bench" / "results" / "bench_model_accuracy.md",
                        help="accuracy report (default bench/results/bench_model_accuracy.md)")
    parser.add_argument("--skip-speed", action="store_true", help="only the checkpoint evaluation")
    args = parser.parse_args()
    if args.checkpoint and not args.eval_data:
        parser.error("--checkpoint needs --eval-data")
    if args.skip_speed and not args.checkpoint:
        parser.error("--skip-speed leaves nothing to do without --checkpoint")
    torch.set_num_threads(args.threads)
    note = f"; torch threads {args.threads}."
    if not args.skip_speed:
        lines = header("bench_model: MEDIAR network on CPU", note)  # the load average before the runs
        rows = []
        for enc in ENCODERS:
            rows.append(bench_encoder(enc, args.reps))
            r = rows[-1]
            print(f"{enc}: {r['params'] / 1e6:.2f} M params, {r['slices_per_s']:.2f} slices/s (256x256, batch 8), "
                  f"{r['train_steps_per_s']:.3f} train steps/s", flush=True)
        write_report(args.out, lines + speed_table(rows, args))
    if args.checkpoint:
        lines = header("bench_model: accuracy of MEDIAR checkpoints on held-out slices", note)
        tables = [accuracy_table(checkpoint, args.eval_data, slices)
                  for checkpoint in args.checkpoint for slices in args.eval_slices]
        for i, table in enumerate(tables):
            lines += ([""] if i else []) + table
        write_report(args.accuracy_out, lines)
    return 0


def speed_table(rows: list[dict], args) -> list[str]:
    base = rows[0]
    lines = [
        "## Speed",
        "",
        "Forward: inference mode, batch 8 of 1x256x256 slices. Train step: forward + backward + AdamW on a",
        "batch of 8 crops 1x128x128 (the default training batch). Times are the best of "
        f"{args.reps} repetitions after a warm-up; the machine is shared, so absolute figures are noisy.",
        "",
        "| encoder | parameters | fp16 checkpoint (MB) | forward slices/s | vs mit_b0 | train steps/s | vs mit_b0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['params'] / 1e6:.2f} M | {r['ckpt_mb']:.1f} | {r['slices_per_s']:.2f} | "
                     f"{r['slices_per_s'] / base['slices_per_s']:.2f}x | {r['train_steps_per_s']:.3f} | "
                     f"{r['train_steps_per_s'] / base['train_steps_per_s']:.2f}x |")
    return lines


def accuracy_table(checkpoint: Checkpoint, eval_data: list[Path], slices: int) -> list[str]:
    from mediar3d.train import evaluate_checkpoint

    t = time.perf_counter()
    result = evaluate_checkpoint(checkpoint.path, eval_data, slices_per_view=slices, progress=False)
    seconds = time.perf_counter() - t
    print(f"{checkpoint.label}, {slices} slices per view: mean AP@0.5 {result['ap50_mean']:.3f} ({seconds:.0f} s)",
          flush=True)
    lines = [
        f"## Accuracy on held-out slices: `{checkpoint.label}`, up to {slices} slices per view",
        "",
        f"Checkpoint `{checkpoint.label}`; data: {', '.join(f'`{d}`' for d in eval_data)} "
        f"({result['volumes']} full-3D GT volumes). Each volume is resampled to the isotropic grid with",
        "objects at the checkpoint's training diameter (as training does), then up to "
        f"{slices} evenly spaced slices with objects per view (centre crop <= 256x256) are",
        "predicted and reconstructed in 2D (`mediar3d.reconstruct.masks_from_flows_2d`); AP@0.5 = TP/(TP+FP+FN) per slice.",
        "",
        "| view | slices | mean AP@0.5 | median AP@0.5 | loss |",
        "|---|---|---|---|---|",
    ]
    for view, r in result["views"].items():
        lines.append(f"| {view} | {r['slices']} | {r['ap50_mean']:.3f} | {r['ap50_median']:.3f} | {r['loss']:.4f} |")
    lines += ["", f"All slices: mean AP@0.5 {result['ap50_mean']:.3f} ({seconds:.0f} s)."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
