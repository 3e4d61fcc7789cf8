"""The workflow configuration: load a YAML config, fill the schema's defaults, validate it.

The schema (`workflow/schemas/config.schema.yaml`) is the one source of truth for every key, its
type, its default and its description. `validate_config` raises `mediar3d.errors.ConfigError` with
a message that names the offending key (e.g. `datasets.zebrafish.voxel_sise`) on an unknown key, a
wrong type or a value out of range.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from mediar3d.errors import ConfigError, InputError
from mediar3d.pipeline import BOUNDARIES, METHODS  # noqa: F401  (schema keys `method`, `reconstruct.boundary`)
from mediar3d.resources import default_model, models_dir, schema_path

SCHEMA_PATH = schema_path()
MODELS_DIR = models_dir()
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}


def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """The config schema as a dict (YAML file)."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_config(path: str | os.PathLike, schema_path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """Read a YAML config file and return it validated, with every default filled in."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    try:
        return validate_config({} if raw is None else raw, schema_path)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def validate_config(config: Mapping[str, Any], schema_path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """A deep copy of `config` with the schema's defaults filled in, validated against the schema.

    Sequence names given as YAML integers (`- 01` reads as 1) become zero-padded strings ("01").
    Raises ConfigError naming the first offending key.
    """
    import jsonschema

    if not isinstance(config, Mapping):
        raise ConfigError(f"the config must be a mapping of keys to values, got {_json_type(config)}")
    schema = load_schema(schema_path)
    filled = copy.deepcopy(dict(config))
    fill_defaults(filled, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(describe_error(errors[0]))
    _normalize_sequences(filled)
    return filled


def _resolve(schema: Mapping, root: Mapping) -> dict:
    """`schema` with a local `$ref` (#/definitions/...) replaced by its target (siblings win)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return dict(schema)
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**_resolve(target, root), **{k: v for k, v in schema.items() if k != "$ref"}}


def fill_defaults(instance: Any, schema: Mapping, root: Mapping) -> Any:
    """Fill, in place, the defaults of `schema` into `instance` (recursively through objects).

    A given object is merged over a non-empty object default, so `resources: {infer: {mem_mb: 1}}`
    keeps infer's default threads and runtime. Values of the wrong type are left for validation.
    """
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return instance
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        sub = _resolve(sub, root)
        default = sub.get("default")
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(default)
        elif isinstance(instance.get(key), dict) and isinstance(default, dict) and default:
            instance[key] = {**copy.deepcopy(default), **instance[key]}
        if key in instance:
            fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in properties:
                fill_defaults(value, extra, root)
    return instance


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _key_name(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def describe_error(error) -> str:
    """One clear sentence for a jsonschema ValidationError, naming the config key."""
    key = _key_name(error.absolute_path)
    schema, value = error.schema, error.instance
    if error.validator == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(k for k in value if k not in allowed)
        where = "" if not error.absolute_path else f" in '{key}'"
        names = ", ".join(f"'{_key_name([*error.absolute_path, k])}'" for k in unknown)
        return f"unknown config key {names}{where}; allowed keys: {', '.join(allowed)}"
    if error.validator == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"config key '{key}': expected {' or '.join(wanted)}, got {_json_type(value)} {value!r}"
    if error.validator == "enum":
        return f"config key '{key}': {value!r} is not one of {error.validator_value}"
    if "propertyNames" in error.schema_path:
        return (f"config key '{_key_name([*error.absolute_path, value])}': invalid dataset name (letters, digits, "
                "_ . - ; report, logs, benchmarks and data are reserved)")
    return f"config key '{key}': {error.message}"


def _normalize_sequences(config: dict) -> None:
    for entry in (config.get("datasets") or {}).values():
        if entry.get("sequences"):
            entry["sequences"] = [f"{s:02d}" if isinstance(s, int) else str(s) for s in entry["sequences"]]


def dataset_kind(entry: Mapping[str, Any]) -> str:
    """'synth', 'ome-zarr' or 'ctc' for one validated `datasets` entry."""
    if entry.get("synth") is not None:
        return "synth"
    path = Path(entry["path"])
    if path.suffix == ".zarr" or (path / "zarr.json").is_file() or (path / ".zattrs").is_file():
        return "ome-zarr"
    return "ctc"


def dataset_path(name: str, entry: Mapping[str, Any], out: str) -> str:
    """Where dataset `name` lies: its `path`, or <out>/data/<name> for a synthetic dataset."""
    if entry.get("synth") is not None:
        return f"{out}/data/{name}"
    return str(entry["path"])


def check_datasets(config: Mapping[str, Any]) -> None:
    """Each dataset has exactly one of path / synth and on-disk ones exist; ConfigError names the key."""
    for name, entry in config["datasets"].items():
        has_path, has_synth = bool(entry.get("path")), entry.get("synth") is not None
        if has_path == has_synth:
            raise ConfigError(f"config key 'datasets.{name}': give either path (a CTC dataset, CTC sequence "
                              "or OME-Zarr on disk) or synth (a synthetic dataset), not both or neither")
        if has_path and not Path(entry["path"]).exists():
            raise ConfigError(f"config key 'datasets.{name}.path': {entry['path']} does not exist")


def resolve_model(config: Mapping[str, Any], models_dir: str | os.PathLike = MODELS_DIR) -> str | list[str] | None:
    """The model the run uses (config `model`, else the shipped checkpoint): one spec, or a list of
    specs (an ensemble) as given; None for method classical, which uses none (as `mediar3d segment`:
    same settings, same masks). A spec is a checkpoint path or `cellpose:NAME|PATH` (mediar3d.backends)."""
    from mediar3d.modelspec import find_cellpose_weights, is_cellpose

    if config["method"] == "classical":
        return None
    model = config.get("model") or default_model(models_dir)
    if model is None:
        raise ConfigError(f"config key 'model': no checkpoint given and none found in {models_dir}")
    specs = [str(m) for m in model] if isinstance(model, (list, tuple)) else [str(model)]
    for spec in specs:
        if is_cellpose(spec):
            try:
                find_cellpose_weights(spec)
            except InputError as err:
                raise ConfigError(f"config key 'model': {err}") from None
        elif not Path(spec).is_file():
            raise ConfigError(f"config key 'model': checkpoint {spec} does not exist")
    return specs if isinstance(model, (list, tuple)) else specs[0]
