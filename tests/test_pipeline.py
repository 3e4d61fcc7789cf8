"""One source for every pipeline default: the `Settings` dataclass. Each command's option default,
the workflow schema's default and the dataclass's agree, and every setting the workflow can set has
a schema key."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from mediar3d.cli import _parser_for
from mediar3d.config import load_schema
from mediar3d.errors import ConfigError
from mediar3d.pipeline import Settings, settings_defaults

#: setting -> its key in the workflow config (a path; "*" = every dataset); None = not a config key
SCHEMA_KEYS: dict[str, tuple[str, ...] | None] = {
    "method": ("method",),
    "device": ("device",),
    "precision": ("precision",),
    "percentiles": ("resample", "percentiles"),
    "max_gib": ("resample", "max_gib"),
    "diameter": ("datasets", "*", "diameter"),
    "tile": ("infer", "tile"),
    "overlap": ("infer", "overlap"),
    "batch": ("infer", "batch"),
    "tta": ("infer", "tta"),
    "prob_threshold": ("reconstruct", "prob_threshold"),
    "min_size": ("reconstruct", "min_size"),
    "boundary": ("reconstruct", "boundary"),
    "block": ("reconstruct", "block"),
    "workers": None,  # the workflow passes its rule's threads (config resources.reconstruct.threads)
}
#: the commands that run pipeline stages
STAGE_COMMANDS = ("resample", "infer", "reconstruct", "segment")


def _schema_default(path: tuple[str, ...]):
    node = load_schema()
    for key in path:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return node["default"]


def _same(value):
    return tuple(value) if isinstance(value, list) else value


def _setting_actions(command: str) -> dict[str, argparse.Action]:
    parser, _ = _parser_for(command)
    names = set(settings_defaults())
    return {a.dest: a for a in parser._actions if a.dest in names}


def test_every_setting_has_a_schema_key_or_a_reason():
    assert set(SCHEMA_KEYS) == set(settings_defaults())


@pytest.mark.parametrize("name", [n for n, key in SCHEMA_KEYS.items() if key is not None])
def test_schema_default_is_the_settings_default(name):
    assert _same(_schema_default(SCHEMA_KEYS[name])) == getattr(Settings(), name)


@pytest.mark.parametrize("command", STAGE_COMMANDS)
def test_command_defaults_are_the_settings_defaults(command):
    actions = _setting_actions(command)
    assert actions, f"{command} takes no pipeline setting"
    for name, action in actions.items():
        assert _same(action.default) == getattr(Settings(), name), (command, name)


def test_segment_takes_every_setting():
    """`segment` can be given every setting the workflow's stage commands take, so the two drivers can
    run the same settings (tests/test_drivers.py)."""
    stage_settings = set().union(*(_setting_actions(c) for c in STAGE_COMMANDS if c != "segment"))
    assert stage_settings <= set(_setting_actions("segment")) == set(settings_defaults())


@pytest.mark.parametrize("bad", [{"tile": 48}, {"overlap": 1.0}, {"batch": 0}, {"method": "magic"},
                                 {"prob_threshold": 1.5}, {"block": (0, 1, 1)}, {"max_gib": 0},
                                 {"diameter": "large"}])
def test_bad_settings_are_config_errors_naming_the_setting(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        Settings(**bad)


def test_settings_fields_are_documented():
    doc = Settings.__doc__
    assert all(f.name in doc for f in fields(Settings))
