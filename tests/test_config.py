"""mediar3d.config: the workflow config is validated against the schema with defaults filled in."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mediar3d.config import (
    SCHEMA_PATH,
    check_datasets,
    dataset_kind,
    dataset_path,
    default_model,
    load_config,
    load_schema,
    resolve_model,
    validate_config,
)
from mediar3d.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"datasets": {"zf": {"synth": {"frames": 2}}}}


def _error(config) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    return str(info.value)


def test_defaults_are_filled_recursively():
    cfg = validate_config(MINIMAL)
    assert cfg["out"] == "results" and cfg["method"] == "mediar3d" and cfg["keep_intermediates"] is False
    assert cfg["infer"] == {"tile": 256, "overlap": 0.25, "batch": 8, "tta": False}
    assert cfg["reconstruct"] == {"prob_threshold": None, "min_size": None, "boundary": "probability",
                                  "block": [128, 256, 256], "scheduler": None}
    assert cfg["datasets"]["zf"]["diameter"] == "auto"
    assert cfg["datasets"]["zf"]["synth"] == {"preset": "zebrafish", "seed": 0, "frames": 2, "shape": None,
                                              "anisotropy": None}
    assert cfg["datasets"]["zf"]["evaluate"] is True and cfg["datasets"]["zf"]["voxel_size"] is None
    assert cfg["resources"]["infer"]["threads"] >= 1
    assert MINIMAL == {"datasets": {"zf": {"synth": {"frames": 2}}}}, "the input must not be modified"


def test_partial_rule_resources_keep_the_other_defaults():
    cfg = validate_config({**MINIMAL, "resources": {"infer": {"mem_mb": 123}}})
    default = validate_config(MINIMAL)["resources"]
    assert cfg["resources"]["infer"] == {**default["infer"], "mem_mb": 123}
    assert cfg["resources"]["fuse"] == default["fuse"]


def test_unknown_top_level_key_is_named():
    message = _error({**MINIMAL, "kep_intermediates": True})
    assert "unknown config key 'kep_intermediates'" in message
    assert "keep_intermediates" in message  # the allowed keys are listed


def test_unknown_nested_key_is_named_with_its_path():
    message = _error({"datasets": {"zf": {"synth": {}, "voxel_sise": [1, 1, 1]}}})
    assert "'datasets.zf.voxel_sise'" in message
    message = _error({**MINIMAL, "infer": {"tiles": 128}})
    assert "'infer.tiles'" in message


@pytest.mark.parametrize("config, key, words", [
    ({**MINIMAL, "infer": {"tile": "big"}}, "infer.tile", "expected integer, got string"),
    ({**MINIMAL, "keep_intermediates": "yes"}, "keep_intermediates", "expected boolean"),
    ({**MINIMAL, "method": "cellpose"}, "method", "is not one of"),
    ({"datasets": {"zf": {"path": "x", "voxel_size": [1, 2]}}}, "datasets.zf.voxel_size", "too short"),
    ({"datasets": {"zf": {"path": "x", "voxel_size": [1, 0, 2]}}}, "datasets.zf.voxel_size.1", "0"),
    ({**MINIMAL, "infer": {"tile": 100}}, "infer.tile", "multiple of 32"),
    ({**MINIMAL, "reconstruct": {"prob_threshold": 1.5}}, "reconstruct.prob_threshold", "maximum"),
])
def test_wrong_values_name_the_key(config, key, words):
    message = _error(config)
    assert f"'{key}'" in message and words in message


def test_datasets_are_required_and_names_checked():
    assert "'datasets' is a required property" in _error({})
    assert "'datasets.report'" in _error({"datasets": {"report": {"path": "x"}}})
    assert "invalid dataset name" in _error({"datasets": {"a b": {"path": "x"}}})


def test_not_a_mapping():
    assert "mapping" in _error([1, 2])


def test_sequences_given_as_yaml_integers_become_names():
    cfg = validate_config(yaml.safe_load("datasets: {d: {path: x, sequences: [01, 2, '03']}}"))
    assert cfg["datasets"]["d"]["sequences"] == ["01", "02", "03"]


def test_shipped_configs_validate():
    default = load_config(REPO / "config" / "config.yaml")
    assert list(default["datasets"]) == ["zebrafish"]
    synth = default["datasets"]["zebrafish"]["synth"]
    assert synth["seed"] == 0 and synth["preset"] == "zebrafish"
    examples = sorted((REPO / "config" / "examples").glob("*.yaml"))
    assert {p.name for p in examples} >= {"ctc.yaml", "omezarr.yaml"}
    for path in examples:
        assert load_config(path)["datasets"]


def test_load_config_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {d: {path: x}}\nthreads: 4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'threads'"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("datasets: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_every_schema_key_has_a_description_and_objects_are_closed():
    schema = load_schema(SCHEMA_PATH)

    def walk(node, where):
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" or "properties" in node:
            assert node.get("additionalProperties") is not True, where
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
        for key, sub in node.get("properties", {}).items():
            if "$ref" not in sub:
                assert sub.get("description"), f"{where}.{key} has no description"
            walk(sub, f"{where}.{key}")
        for key in ("additionalProperties", "items"):
            walk(node.get(key), f"{where}.{key}")
        for key, sub in node.get("definitions", {}).items():
            walk(sub, f"definitions.{key}")

    walk(schema, "config")


def test_dataset_kinds_and_paths(tmp_path):
    zarr_dir = tmp_path / "img.ome.zarr"
    zarr_dir.mkdir()
    (tmp_path / "ctc").mkdir()
    cfg = validate_config({"datasets": {"s": {"synth": {}}, "z": {"path": str(zarr_dir)},
                                        "c": {"path": str(tmp_path / "ctc")}}})
    kinds = {name: dataset_kind(entry) for name, entry in cfg["datasets"].items()}
    assert kinds == {"s": "synth", "z": "ome-zarr", "c": "ctc"}
    assert dataset_path("s", cfg["datasets"]["s"], "out") == "out/data/s"
    assert dataset_path("c", cfg["datasets"]["c"], "out") == str(tmp_path / "ctc")
    check_datasets(cfg)


def test_check_datasets_rejects_missing_or_ambiguous(tmp_path):
    cfg = validate_config({"datasets": {"c": {"path": str(tmp_path / "absent")}}})
    with pytest.raises(ConfigError, match="'datasets.c.path'.*does not exist"):
        check_datasets(cfg)
    cfg = validate_config({"datasets": {"c": {"path": str(tmp_path), "synth": {}}}})
    with pytest.raises(ConfigError, match="'datasets.c'.*either path"):
        check_datasets(cfg)
    cfg = validate_config({"datasets": {"c": {}}})
    with pytest.raises(ConfigError, match="'datasets.c'"):
        check_datasets(cfg)


def test_model_resolution(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    assert default_model(models) is None
    cfg = validate_config(MINIMAL)
    with pytest.raises(ConfigError, match="'model'"):
        resolve_model(cfg, models)
    (models / "b.pt").write_bytes(b"x")
    (models / "a.pt").write_bytes(b"x")
    (models / "card.md").write_text("card")
    assert resolve_model(cfg, models) == str(models / "a.pt")
    assert resolve_model({**cfg, "model": str(models / "b.pt")}, models) == str(models / "b.pt")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model({**cfg, "model": str(models / "c.pt")}, models)
    assert resolve_model({**cfg, "method": "classical"}, tmp_path / "none") is None


def test_one_diameter_setting():
    """The object diameter is set once, in um, per dataset (`diameter`); reconstruction follows what
    resample chose, so no second setting in iso voxels can contradict it."""
    assert "unknown config key 'reconstruct.diameter_px'" in _error({**MINIMAL, "reconstruct": {"diameter_px": 14}})
