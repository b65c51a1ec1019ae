"""Settings without editing code: ``--config FILE`` and ``--set SECTION.KEY=VALUE`` over a profile.

A profile (``pipelines/config.py``) is the starting point; a settings file (YAML or JSON with the same
nested keys as ``PipelineConfig``) and ``--set`` assignments change it, in that order::

    mtnlp run --set training.learning_rate=5e-4 --set model.num_layers=4
    mtnlp run --config my-settings.yaml            # training: {learning_rate: 5.0e-4}, model: {num_layers: 4}

Everything is checked against the dataclasses' own type hints (read with ``typing.get_type_hints``, so
fields added to the config need nothing here): an unknown key is an error naming it and listing the
valid keys; a value of the wrong type is an error naming the key, the expected type and the value.
Text values (every ``--set`` value, and strings in a file) are parsed by the field's type: ``int``,
``float``, ``bool`` (true/false, yes/no, on/off, 1/0), ``str``, tuples and lists (``a,b,c`` or
``[a, b, c]``), mappings (``{lower_bound: 0.3, tolerance: 0.05}``), ``none``/``null`` for optional fields.
Mappings merge into the profile's values: ``--set heads.ner.gate.lower_bound=0.3`` changes one bound of one
head's gate and keeps the rest of that head's section and every other head's.

A key that has moved (``gates.ner``, ``training.loss_weights``, ... now under ``heads.<name>``) is an error
that names its new place (``MOVED_TO_HEADS``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from mtnlp.pipelines.config import PipelineConfig, get_config

# Top-level fields that a settings file or --set may not change, and what to use instead.
FIXED_FIELDS = {"profile": "choose the profile with --profile"}
# Settings that were keyed by head name in other sections and now live in each head's own section:
# the old key -> the field of heads.<name> that replaced it.
MOVED_TO_HEADS = {
    "gates": "gate",
    "model.head_layers": "encoder_layer",
    "model.head_dropout": "dropout",
    "training.loss_weights": "loss_weight",
    "training.ranking_loss_heads": "loss",
    "training.sequence_label_smoothing": "label_smoothing",
}
NONE_WORDS = ("none", "null", "~")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


class SettingsError(ValueError):
    """A setting that does not fit the typed config; the message names the key and what was wrong."""


# ----- public API -------------------------------------------------------------------------------------------------
def add_settings_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """The ``--config`` and ``--set`` options (shared by ``mtnlp run`` and ``mtnlp kubeflow compile``)."""
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        dest="config_files",
        help="settings file (YAML or JSON, the nested keys of pipelines/config.py, e.g. "
        "'training: {learning_rate: 5.0e-4}') applied over the profile; repeatable, "
        "later files win (default: none)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="assignments",
        help="change one setting after the --config files, e.g. --set training.learning_rate=5e-4 "
        "--set model.num_layers=4 --set heads.ner.gate.lower_bound=0.3 --set "
        "heads.ner.loss_weight=2; repeatable (default: none)",
    )


def config_from_args(args: argparse.Namespace, shortcuts: Mapping[str, Any] | None = None) -> PipelineConfig:
    """The profile named by ``args.profile``, then ``args.config_files``, then ``shortcuts`` (nested
    settings from dedicated flags such as ``--train-steps``), then ``args.assignments``."""
    return effective_config(
        args.profile, files=args.config_files, assignments=args.assignments, shortcuts=shortcuts or {}
    )


def effective_config(
    profile: str,
    files: Sequence[str] = (),
    assignments: Sequence[str] = (),
    shortcuts: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    try:
        config = get_config(profile)
    except ValueError as e:
        raise SettingsError(str(e)) from None
    for path in files:
        config = apply_mapping(config, load_settings_file(path, profile), source=path)
    if shortcuts:
        config = apply_mapping(config, shortcuts, source="command-line flags")
    for assignment in assignments:
        config = apply_mapping(config, parse_assignment(assignment), source=f"--set {assignment}")
    return config


def parse_assignment(text: str) -> dict[str, Any]:
    """``"training.learning_rate=5e-4"`` -> ``{"training": {"learning_rate": "5e-4"}}`` (values stay text)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or any(not part for part in parts):
        raise SettingsError(f"--set expects SECTION.KEY=VALUE (e.g. training.learning_rate=5e-4), got {text!r}")
    nested: dict[str, Any] = {parts[-1]: value.strip()}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def load_settings_file(path: str, profile: str | None = None) -> dict[str, Any]:
    """A YAML or JSON settings file as a mapping. A ``profile`` key is allowed when it names ``profile``
    (so that the printed effective config can be read back) and dropped."""
    import yaml

    if not os.path.isfile(path):
        raise SettingsError(f"settings file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise SettingsError(
            f"settings file {path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: {e}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"settings file {path} must hold a mapping of sections (model:, training:, ...), not {type(data).__name__}"
        )
    if "profile" in data:
        named = data.pop("profile")
        if profile is not None and named != profile:
            raise SettingsError(
                f"settings file {path} is for profile {named!r}, this run uses {profile!r}: "
                f"pass --profile {named} or remove the profile key"
            )
    return data


def apply_mapping(config: PipelineConfig, settings: Mapping[str, Any], source: str = "settings") -> PipelineConfig:
    """``config`` with ``settings`` (nested, as in a settings file) merged in, checked against its types."""
    for name, hint in FIXED_FIELDS.items():
        if name in settings:
            raise SettingsError(f"{source}: {name!r} cannot be set ({hint})")
    try:
        return _merge(config, type(config), settings, "")
    except SettingsError as e:
        raise SettingsError(f"{source}: {e}") from None


def config_from_json(values: Mapping[str, Any]) -> PipelineConfig:
    """The typed config back from its JSON form (a component's ``custom_config``), checked as settings are:
    an unknown or misspelt key is an error, not silently ignored."""
    if "profile" not in values:
        raise SettingsError("custom_config: no 'profile' key (expected PipelineConfig as JSON)")
    return apply_mapping(
        get_config(values["profile"]), {k: v for k, v in values.items() if k != "profile"}, "custom_config"
    )


def as_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists), as the summary and ML Metadata hold it."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def format_config(config: Any) -> str:
    """YAML of the whole config; it can be passed back with ``--config`` (with the same ``--profile``)."""
    import yaml

    return yaml.safe_dump(as_dict(config), sort_keys=False, default_flow_style=False).rstrip()


def config_changes(base: Any, effective: Any) -> dict[str, dict[str, Any]]:
    """``{"training.learning_rate": {"profile": 0.002, "effective": 0.0005}, ...}``: what differs."""
    before, after = _flatten(as_dict(base)), _flatten(as_dict(effective))
    return {
        key: {"profile": before.get(key), "effective": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


# ----- merging and type checks ------------------------------------------------------------------------------------
def _merge(current: Any, hint: Any, value: Any, key: str) -> Any:
    """``value`` (text, a parsed file value, or a mapping to merge) checked and converted to ``hint``,
    merged into ``current`` where both are mappings."""
    hint_origin = typing.get_origin(hint)
    if hint_origin in (typing.Union, types.UnionType):
        return _merge_union(current, hint, value, key)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _merge_dataclass(current, hint, value, key)
    if hint_origin is dict or hint is dict:
        return _merge_dict(current, hint, value, key)
    return _convert(value, hint, key)


def _merge_union(current: Any, hint: Any, value: Any, key: str) -> Any:
    arms = typing.get_args(hint)
    if type(None) in arms and (value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS)):
        return None
    errors = []
    for arm in arms:
        if arm is type(None):
            continue
        try:
            return _merge(current if _fits(current, arm) else None, arm, value, key)
        except SettingsError as e:
            errors.append(e)
    if len(errors) == 1 and not str(errors[0]).startswith(f"{key}: expected "):
        raise errors[0]  # a problem inside the value (a nested key), not with its type
    raise _wrong_type(key, hint, value)


def _fits(current: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and isinstance(current, origin)


def _merge_dataclass(current: Any, cls: type, value: Any, key: str) -> Any:
    value = _as_mapping(value, cls, key)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    hints = typing.get_type_hints(cls)
    changes = {}
    for name, item in value.items():
        if name not in valid:
            moved = MOVED_TO_HEADS.get(f"{key}.{name}" if key else str(name))
            if moved:
                raise _moved_to_heads(f"{key}.{name}" if key else str(name), moved, item)
            raise _unknown_key(key, str(name), valid, cls)
        child_key = f"{key}.{name}" if key else str(name)
        changes[name] = _merge(getattr(current, name, None), hints[name], item, child_key)
    try:
        if current is not None:
            return dataclasses.replace(current, **changes)
        return cls(**changes)
    except TypeError as e:  # a new entry of a mapping of dataclasses that lacks required fields
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.init
            and f.name not in changes
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise SettingsError(
                f"{key or 'settings'}: a new {cls.__name__} needs {', '.join(missing)} as well (it has no defaults)"
            ) from None
        raise SettingsError(f"{key or 'settings'}: {e}") from None
    except ValueError as e:  # the dataclass's own validation (__post_init__)
        raise SettingsError(f"{key}: {e}" if key else str(e)) from None


def _merge_dict(current: Any, hint: Any, value: Any, key: str) -> dict:
    key_hint, value_hint = typing.get_args(hint) or (Any, Any)
    value = _as_mapping(value, hint, key)
    merged = dict(current) if isinstance(current, Mapping) else {}
    for name, item in value.items():
        converted_name = _convert(name, key_hint, f"{key} (a key)")
        try:
            merged[converted_name] = _merge(merged.get(converted_name), value_hint, item, f"{key}.{name}")
        except SettingsError as e:
            if converted_name in merged or not merged:
                raise
            # A new key of a mapping that fails to build is most likely a typo: say which keys there are.
            close = difflib.get_close_matches(str(name), [str(k) for k in merged], n=1)
            raise SettingsError(
                f"{e} ({key} has no {name!r} yet{f'; did you mean {close[0]}?' if close else ''} "
                f"its keys: {', '.join(map(str, merged))})"
            ) from None
    return merged


def _is_dataclass_hint(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _as_mapping(value: Any, hint: Any, key: str) -> Mapping:
    if isinstance(value, str):
        value = _parse_text(value)
    if not isinstance(value, Mapping):
        raise _wrong_type(key, hint, value)
    return value


def _parse_text(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _convert(value: Any, hint: Any, key: str) -> Any:
    """A leaf value: ``value`` (text or a parsed file value) as ``hint``, or a SettingsError."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return _parse_text(value) if isinstance(value, str) else value
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        for choice in choices:
            if value == choice or (isinstance(value, str) and not isinstance(choice, str) and value == str(choice)):
                return choice
        raise SettingsError(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    if origin in (tuple, list) or hint in (tuple, list):
        return _convert_sequence(value, hint, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise _wrong_type(key, hint, value)
    if hint in (int, float):
        # a float field takes an int too; an int field takes no float
        accepted = (int, float) if hint is float else int
        if isinstance(value, accepted) and not isinstance(value, bool):
            return hint(value)
        if isinstance(value, str):
            try:
                return hint(value.strip())
            except ValueError:
                pass
        raise _wrong_type(key, hint, value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _wrong_type(key, hint, value)
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if isinstance(value, str):
            parsed = _parse_text(value)
            if isinstance(parsed, hint):
                return parsed
        raise _wrong_type(key, hint, value)
    return value  # a hint this module does not understand: leave the value to the config's own checks


def _convert_sequence(value: Any, hint: Any, key: str) -> Any:
    container = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            parsed = _parse_text("[" + text[1:-1] + "]" if text.startswith("(") else text)
            value = parsed if isinstance(parsed, list) else value
        else:
            value = [item.strip() for item in text.split(",")] if text else []
    if not isinstance(value, (list, tuple)):
        raise _wrong_type(key, hint, value)
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise SettingsError(
                f"{key}: expected {len(args)} values ({_type_name(hint)}), got {len(value)}: {list(value)!r}"
            )
        items = [_convert(item, arg, f"{key}[{i}]") for i, (item, arg) in enumerate(zip(value, args))]
    else:
        item_hint = args[0] if args else Any
        items = [_merge(None, item_hint, item, f"{key}[{i}]") for i, item in enumerate(value)]
    return tuple(items) if container is tuple else list(items)


# ----- messages ---------------------------------------------------------------------------------------------------
def _unknown_key(section: str, name: str, valid: Sequence[str], cls: type | None) -> SettingsError:
    where = f"{section}.{name}" if section else name
    of = f"{section}" if section else "the top level"
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return SettingsError(f"unknown setting {where!r}{hint}; valid keys of {of}: {', '.join(valid)}")


def _moved_to_heads(old: str, field: str, value: Any) -> SettingsError:
    """The error for a moved key, with the value rewritten to the new keys where the value says which heads."""
    parsed = _parse_text(value) if isinstance(value, str) else value
    if field == "loss":  # the heads named had the ranking loss
        names = parsed if isinstance(parsed, (list, tuple)) else [parsed] if parsed not in (None, "") else []
        examples = [f"heads.{name}.loss=ranking" for name in names]
    elif isinstance(parsed, Mapping):  # keyed by head name
        examples = [
            f"heads.{name}.{key}={item}"
            for name, values in parsed.items()
            for key, item in _flatten({field: values}).items()
        ]
    else:  # one value for every head
        examples = [f"heads.<head>.{field}={parsed} for each head"]
    return SettingsError(
        f"{old!r} has moved to each head's own section, heads.<head>.{field}"
        + (f": use {', '.join(examples)}" if examples else "")
    )


def _wrong_type(key: str, hint: Any, value: Any) -> SettingsError:
    return SettingsError(f"{key}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__})")


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])} (a,b or [a, b])"
        return "a tuple of (" + ", ".join(_type_name(a) for a in args) + ")"
    if origin is list:
        return f"a list of {_type_name(args[0]) if args else 'values'} (a,b or [a, b])"
    if origin is dict:
        return (
            f"a mapping of {_type_name(args[0])} to {_type_name(args[1])} ({{key: value, ...}})"
            if args
            else "a mapping"
        )
    if _is_dataclass_hint(hint):
        keys = ", ".join(f.name for f in dataclasses.fields(hint) if f.init)
        return f"{hint.__name__} (a mapping with keys {keys})"
    return getattr(hint, "__name__", str(hint))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for name, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{name}" if prefix else str(name)))
        return flat
    return {prefix: value}
