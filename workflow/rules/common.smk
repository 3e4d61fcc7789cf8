# Paths, settings and input functions shared by the rules (no rules here).

import functools
import hashlib
import json
import os
import re
import shlex
import shutil
from pathlib import Path

from mediar3d.config import dataset_kind, dataset_path, resolve_model
from mediar3d.modelspec import model_specs, spec_files

OUT = config["out"]
# the model: one spec or a list (an ensemble); its files are the inputs of resample and infer
MODEL = resolve_model(config)
MODEL_FILES = spec_files(MODEL)
MODEL_OPTIONS = " ".join(f"--model {shlex.quote(spec)}" for spec in model_specs(MODEL))
METHOD = config["method"]
DATASETS = config["datasets"]
DATASET_PATHS = {name: dataset_path(name, entry, OUT) for name, entry in DATASETS.items()}
DATASET_KINDS = {name: dataset_kind(entry) for name, entry in DATASETS.items()}
RES = config["resources"]
GPUS = 1 if config["device"] == "cuda" else 0
ENV = "../../envs/mediar3d.yaml"

# one folder per timepoint for the zarr intermediates
WORK = f"{OUT}/{{dataset}}/work/{{sequence}}/t{{timepoint}}"
ISO = f"{WORK}/iso.zarr"
VIEWS = f"{WORK}/views.zarr"
FIELD = f"{WORK}/field.zarr"
RES_DIR = f"{OUT}/{{dataset}}/{{sequence}}_RES"
# with tracking, reconstruct writes per-frame masks that `track` relabels into the RES folder
MASK = (f"{OUT}/{{dataset}}/work/{{sequence}}/masks/mask{{timepoint}}.tif" if config["track"]
        else f"{RES_DIR}/mask{{timepoint}}.tif")
OME_ZARR = f"{OUT}/{{dataset}}/{{sequence}}.ome.zarr"
METRICS = f"{OUT}/{{dataset}}/metrics/{{sequence}}/t{{timepoint}}.csv"
OBJECTS = f"{OUT}/{{dataset}}/metrics/{{sequence}}/t{{timepoint}}_objects.csv"
DATASET_REPORT = f"{OUT}/{{dataset}}/report"
REPORT = f"{OUT}/report"
LOGS = f"{OUT}/logs"
BENCH = f"{OUT}/benchmarks"
FRAME_LOG = "{dataset}/{sequence}/t{timepoint}"


def intermediate(path):
    """A zarr intermediate: deleted once its consumers ran, unless keep_intermediates."""
    return directory(path) if config["keep_intermediates"] else temp(directory(path))


def resources_of(rule_name):
    """mem_mb and runtime (min) of a rule from config `resources`."""
    spec = RES[rule_name]
    return {"mem_mb": spec["mem_mb"], "runtime": spec["runtime"]}


def option(flag, value):
    """`--flag v1 v2` for a set value (each value shell-quoted: paths may hold spaces), '' for None
    (the stage's default)."""
    if value is None:
        return ""
    values = value if isinstance(value, (list, tuple)) else [value]
    return " ".join([flag, *(shlex.quote(str(v)) for v in values)])


# --------------------------------------------------------------------------------------------
# what the info checkpoint found


@functools.lru_cache(maxsize=None)
def _read_json(path, mtime_ns):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def dataset_info(dataset):
    """The JSON written by `mediar3d info` for a dataset (waits for the checkpoint)."""
    path = checkpoints.info.get(dataset=dataset).output[0]
    return _read_json(path, os.stat(path).st_mtime_ns)


def sequence_name(name):
    """Output name of a sequence: CTC `01` stays, an OME-Zarr `embryo.ome.zarr` becomes `embryo`."""
    return re.sub(r"(\.ome)?\.zarr$", "", name)


def sequences(dataset):
    """{sequence name: info entry} of the sequences to process (config `sequences` or all)."""
    return selected_sequences(dataset, dataset_info(dataset))


def selected_sequences(dataset, info):
    """{sequence name: info entry} of an info.json's sequences that the config selects (`sequences` or all)."""
    found = {sequence_name(name): entry for name, entry in info["sequences"].items()}
    wanted = DATASETS[dataset]["sequences"]
    if wanted is None:
        return found
    missing = [s for s in wanted if s not in found]
    if missing:
        raise ValueError(f"config key 'datasets.{dataset}.sequences': {missing} not found "
                         f"in {DATASET_PATHS[dataset]} (it holds {sorted(found)})")
    return {s: found[s] for s in wanted}


def _digits(dataset, entry):
    if DATASET_KINDS[dataset] == "ome-zarr":
        return max(3, len(str(max(entry["timepoints"]))))
    return entry.get("digits", 3)


def timepoints(dataset, sequence):
    """Zero-padded timepoint strings of a sequence (as in its frame names)."""
    return timepoint_names(dataset, sequences(dataset)[sequence])


def timepoint_names(dataset, entry):
    """Zero-padded timepoint strings of a sequence's info entry."""
    width = _digits(dataset, entry)
    return [f"{t:0{width}d}" for t in entry["timepoints"]]


def gt_timepoints(dataset, sequence):
    """Timepoints with CTC SEG ground truth (full 3D or single slices); [] for OME-Zarr."""
    entry = sequences(dataset)[sequence]
    if not DATASETS[dataset]["evaluate"] or DATASET_KINDS[dataset] == "ome-zarr":
        return []
    width = _digits(dataset, entry)
    gts = set(entry.get("gt_full", [])) | {int(t) for t in entry.get("gt_slices", {})}
    return [f"{t:0{width}d}" for t in sorted(gts)]


def sequence_dir(dataset, sequence):
    return Path(sequences(dataset)[sequence]["path"])


# --------------------------------------------------------------------------------------------
# outputs of frames the input no longer holds

PER_FRAME_RULES = ("resample", "infer", "fuse", "reconstruct", "evaluate")


def frame_outputs(dataset, sequence):
    """What the jobs of one frame write (masks, metrics, kept intermediates, logs, benchmarks), with
    the timepoint left as {timepoint} (always in the last path component)."""
    paths = [MASK, METRICS, OBJECTS, WORK]
    paths += [f"{LOGS}/{rule}/{FRAME_LOG}.log" for rule in PER_FRAME_RULES]
    paths += [f"{BENCH}/{rule}/{FRAME_LOG}.tsv" for rule in PER_FRAME_RULES]
    return [p.format(dataset=dataset, sequence=sequence, timepoint="{timepoint}") for p in paths]


def _timepoint_entries(template):
    """{timepoint string: path} of what exists for a `frame_outputs` template."""
    folder, name = os.path.split(template)
    pattern = re.compile(re.escape(name).replace(re.escape("{timepoint}"), r"(\d+)") + "$")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return {m.group(1): os.path.join(folder, n) for n in names if (m := pattern.match(n))}


def prune_removed_frames(dataset, info_path, log_path):
    """Delete the outputs of frames that a dataset's sequences no longer hold (the frame or its file
    was removed since an earlier run), so the results reflect exactly the current input; each removed
    path is appended to `log_path`. Runs in the `info` checkpoint, before any job that reads them."""
    with open(info_path, encoding="utf-8") as fh:
        info = json.load(fh)
    removed = []
    for sequence, entry in selected_sequences(dataset, info).items():
        keep = set(timepoint_names(dataset, entry))
        for template in frame_outputs(dataset, sequence):
            for timepoint, path in sorted(_timepoint_entries(template).items()):
                if timepoint not in keep:
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                    removed.append(path)
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.writelines(f"removed {path}: its frame is no longer in the input\n" for path in removed)


# --------------------------------------------------------------------------------------------
# input functions


def synth_or_path(wildcards):
    """info's input: the dataset folder (made by `synth` for synthetic datasets)."""
    return DATASET_PATHS[wildcards.dataset]


def dataset_listing(wildcards):
    """Digest of the dataset's file names, so that an added frame or GT file re-runs `info`.

    Synthetic datasets change only through `synth` (empty digest: `info` follows synth's output)."""
    if DATASET_KINDS[wildcards.dataset] == "synth":
        return ""
    root = Path(DATASET_PATHS[wildcards.dataset])
    digest = hashlib.sha1()
    if DATASET_KINDS[wildcards.dataset] == "ome-zarr":
        for meta in sorted(root.glob("*.json")) + sorted(root.glob("*/zarr.json")) + sorted(root.glob("*/.zarray")):
            digest.update(meta.read_bytes())
        return digest.hexdigest()
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        digest.update(folder.encode())
        digest.update("\n".join(sorted(f for f in files if not f.startswith("."))).encode())
    return digest.hexdigest()


def frame_input(wildcards):
    """resample's input: the CTC frame tTTT.tif, or the OME-Zarr image."""
    if DATASET_KINDS[wildcards.dataset] == "ome-zarr":
        return DATASET_PATHS[wildcards.dataset]
    frame = sequence_dir(wildcards.dataset, wildcards.sequence) / f"t{wildcards.timepoint}.tif"
    long_suffix = frame.with_suffix(".tiff")
    return str(long_suffix if long_suffix.exists() and not frame.exists() else frame)


def gt_files(wildcards):
    """The SEG ground-truth files of one timepoint (full 3D and/or single slices), as `mediar3d info`
    found them (mediar3d.io.ctc.parse_gt_name)."""
    entry = sequences(wildcards.dataset)[wildcards.sequence]
    return entry.get("gt_files", {}).get(str(int(wildcards.timepoint)), [])


def synth_options(wildcards):
    settings = DATASETS[wildcards.dataset]["synth"]
    return " ".join(filter(None, [option("--frames", settings["frames"]), option("--shape", settings["shape"]),
                                  option("--anisotropy", settings["anisotropy"])]))


def resample_options(wildcards):
    entry = DATASETS[wildcards.dataset]
    return " ".join(filter(None, [
        MODEL_OPTIONS,
        option("--voxel-size", entry["voxel_size"]),
        option("--diameter", "none" if entry["diameter"] is None else entry["diameter"]),
        option("--device", config["device"]),
        option("--precision", config["precision"]),
        option("--percentiles", config["resample"]["percentiles"]),
        option("--max-gib", config["resample"]["max_gib"]),
    ]))


def sequence_masks(wildcards):
    return expand(MASK, dataset=wildcards.dataset, sequence=wildcards.sequence,
                  timepoint=timepoints(wildcards.dataset, wildcards.sequence))


def sequence_frames(wildcards):
    return [frame_input(Wildcards(wildcards, t)) for t in timepoints(wildcards.dataset, wildcards.sequence)]


class Wildcards:
    """Wildcards of one timepoint of a sequence (for calling per-frame input functions)."""

    def __init__(self, wildcards, timepoint):
        self.dataset, self.sequence, self.timepoint = wildcards.dataset, wildcards.sequence, timepoint


def dataset_metrics(dataset):
    return [path for seq in sequences(dataset)
            for path in expand(METRICS, dataset=dataset, sequence=seq, timepoint=gt_timepoints(dataset, seq))]


def has_gt(dataset):
    return bool(dataset_metrics(dataset))


def res_output(dataset, sequence):
    """What makes a sequence's RES folder complete: the tracked folder, or every mask."""
    if config["track"]:
        return [RES_DIR.format(dataset=dataset, sequence=sequence)]
    return expand(MASK, dataset=dataset, sequence=sequence, timepoint=timepoints(dataset, sequence))


def sequence_outputs(dataset):
    """RES folders (+ an OME-Zarr with labels/) of every sequence of a dataset."""
    targets = []
    for seq in sequences(dataset):
        targets += res_output(dataset, seq)
        if config["omezarr"]:
            targets.append(OME_ZARR.format(dataset=dataset, sequence=seq))
    return targets


def report_inputs(wildcards):
    """The global report runs last: after every metrics table, RES folder and OME-Zarr."""
    metrics, others = [], []
    for dataset in DATASETS:
        metrics += dataset_metrics(dataset)
        others += sequence_outputs(dataset)
        if has_gt(dataset):
            others.append(DATASET_REPORT.format(dataset=dataset))
    return {"metrics": metrics, "others": others}


def final_targets(wildcards):
    """Everything the default target builds."""
    targets = []
    for dataset in DATASETS:
        targets += sequence_outputs(dataset)
    if any(has_gt(d) for d in DATASETS):
        targets.append(REPORT)
    return targets


def model_card():
    """The report's model card: config report.model_card, else a card next to the checkpoint
    (<checkpoint>.md, MODEL_CARD.md, model_card.md or README.md)."""
    if config["report"]["model_card"]:
        return [config["report"]["model_card"]]
    if not MODEL_FILES:
        return []
    model = Path(MODEL_FILES[0])
    for card in (model.with_suffix(".md"), *(model.parent / n for n in ("MODEL_CARD.md", "model_card.md", "README.md"))):
        if card.is_file():
            return [str(card)]
    return []


def print_summary(out):
    """After a successful run: per-timepoint SEG, the summary table and the report's path."""
    import pandas as pd

    report_dir = Path(out) / "report"
    if not (report_dir / "summary.csv").is_file():  # no ground truth anywhere, or another target
        return
    per_timepoint = pd.read_csv(report_dir / "per_timepoint.csv", dtype={"sequence": str})
    shown = [c for c in ["dataset", "sequence", "method", "timepoint", "seg", "ap50", "n_gt", "n_pred"]
             if c in per_timepoint.columns]
    print("\nper-timepoint SEG:")
    print(per_timepoint[shown].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nsummary:")
    print(pd.read_csv(report_dir / "summary.csv", dtype={"sequence": str}).to_string(
        index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nreport: {report_dir / 'report.html'}", flush=True)
