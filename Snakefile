"""mediar3d: segment every cell of 3D+t microscopy datasets and score the result.

    snakemake --cores all                                   # the embedded default (config/config.yaml)
    snakemake --cores all --configfile config/examples/ctc.yaml
    snakemake --profile workflow/profiles/slurm --configfile my.yaml

Per timepoint: resample -> infer -> fuse -> reconstruct -> evaluate; per sequence: track (CTC
RES folder) and an OME-Zarr; then dataset_report (per dataset) and report (all datasets).
See README.md for the outputs and the configuration.
"""

import os
import sys

import yaml
from snakemake.utils import min_version, validate

min_version("9.0")

# the `mediar3d` package and command of the Python that runs Snakemake (for an un-activated venv);
# a conda environment's own `mediar3d` (--sdm conda) still comes first on the PATH
sys.path.insert(0, workflow.basedir)
shell.prefix(f"set -euo pipefail; export PATH=\"$PATH:{os.path.dirname(sys.executable)}\"; ")

from mediar3d.config import check_datasets, validate_config
from mediar3d.io.runlock import hold as hold_output_folder


# the embedded default, unless --configfile names the config (which would otherwise be merged into it)
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


# unknown key, wrong type or bad value -> ConfigError naming the key; then every default is filled in
_checked = validate_config(config)
config.clear()
config.update(_checked)
validate(config, "workflow/schemas/config.schema.yaml", set_default=False)
check_datasets(config)


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    sequence=r"[^/]+",
    timepoint=r"\d+",


include: "workflow/rules/common.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/info.smk"
include: "workflow/rules/resample.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/fuse.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/omezarr.smk"
include: "workflow/rules/dataset_report.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/train.smk"


rule all:
    default_target: True
    input:
        final_targets,


# one run per output folder: Snakemake's lock does not cover the jobs added after the info checkpoint,
# nor runs from another working directory (mediar3d/io/runlock.py); a second run stops here
onstart:
    hold_output_folder(config["out"])


onsuccess:
    print_summary(config["out"])
