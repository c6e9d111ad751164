"""Options of ``st-oblique``'s subcommands: from the command line, from YAML/JSON config files, and saved back.

Every option of a subcommand can also come from ``--config FILE`` (YAML or JSON, a mapping of option names to
values, with dashes or underscores: ``num-tokens: 8`` or ``num_tokens: 8``); options given on the command line
win. The training options are a dataclass (:class:`st_oblique.app.train_pipeline.TrainConfig`): :func:`add_dataclass_options`
turns its fields into command-line options, and the resolved configuration is saved next to the model with
:func:`write_config_file`, so that ``st-oblique train --config RUN/train_config.yaml`` repeats a run.

Example::

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_dataclass_options(parser, TrainConfig)
    args = parse_args_with_config(parser, ["--config", "run.yaml", "--num-tokens", "8"])
    config = TrainConfig(**{name: getattr(args, name) for name in TrainConfig.field_names()})
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from st_oblique.errors import ObliqueConfigError
from st_oblique.validators import check_positive_int, parse_token_counts

__all__ = [
    "add_dataclass_options",
    "apply_config_file",
    "non_negative_int",
    "option_flag",
    "parse_args_with_config",
    "positive_int",
    "read_config_file",
    "token_counts",
    "write_config_file",
]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (``.yaml``/``.yml``, or anything else) or JSON (``.json``) file, keys with underscores.

    Raises:
        ObliqueConfigError: the file is missing, unreadable, not valid YAML/JSON, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ObliqueConfigError(f"Config file not found: {path}")
    is_json = path.suffix.lower() == ".json"
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as error:
        raise ObliqueConfigError(f"Cannot read the config file {path}: {error}") from error
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())
        raise ObliqueConfigError(f"{path} is not valid {'JSON' if is_json else 'YAML'}: {reason}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ObliqueConfigError(f"{path} must hold a mapping of option names to values, not a {type(data).__name__}.")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def write_config_file(values: dict[str, Any], path: str | Path, header: str | None = None) -> Path:
    """Write ``values`` as YAML (or JSON for a ``.json`` path), readable back by :func:`read_config_file`."""
    path = Path(path)
    plain = json.loads(json.dumps(values, default=str))  # paths and other objects as strings, YAML-safe
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(plain, indent=2) + "\n", encoding="utf-8")
    else:
        comment = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
        path.write_text(comment + yaml.safe_dump(plain, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def add_repeatable_option(parser: argparse.ArgumentParser, flag: str, *, dest: str, metavar: str, help: str) -> None:
    """A flag that may be given several times; its value is the list of what was given (None when never given)."""
    parser.add_argument(flag, action="append", dest=dest, default=None, metavar=metavar, help=help)


def positive_int(value: str) -> int:
    """An argparse ``type``: a whole number >= 1 (argparse names the option in its message)."""
    return check_positive_int(_whole_number(value), name="", error=argparse.ArgumentTypeError)


def non_negative_int(value: str) -> int:
    """An argparse ``type``: a whole number >= 0."""
    return check_positive_int(_whole_number(value), name="", allow_zero=True, error=argparse.ArgumentTypeError)


def token_counts(value: str) -> list[int]:
    """An argparse ``type``: comma-separated positive whole numbers of tokens (``"1,2,4,8,16"``), no repeats."""
    return parse_token_counts(value, name="", error=argparse.ArgumentTypeError)


def _whole_number(value: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None


def option_flag(name: str) -> str:
    """``"num_tokens"`` -> ``"--num-tokens"``."""
    return "--" + name.replace("_", "-")


def apply_config_file(parser: argparse.ArgumentParser, path: str | Path, argv: Sequence[str]) -> dict[str, Any]:
    """Make the values in the config file at ``path`` the defaults of ``parser``'s options.

    Keys are option names (``num_tokens``, ``num-tokens``) or destinations; options that appear in ``argv`` keep
    their command-line value (for repeatable options the command line replaces the file's list).

    Returns:
        The defaults that were set.

    Raises:
        ObliqueConfigError: a key that is not an option of this subcommand, or a positional argument.
    """
    values = read_config_file(path)
    actions = {}
    for action in parser._actions:
        if action.dest in (argparse.SUPPRESS, "help", "config"):
            continue
        actions[action.dest] = action
        for flag in action.option_strings:
            actions.setdefault(flag.lstrip("-").replace("-", "_"), action)
    defaults = {}
    for key, value in values.items():
        action = actions.get(key)
        if action is None:
            known = ", ".join(sorted(dest for dest, found in actions.items() if found.dest == dest and found.option_strings))
            raise ObliqueConfigError(f"Unknown option {key!r} in {path}; the options of this command are: {known}.")
        if not action.option_strings:
            raise ObliqueConfigError(f"{key!r} in {path} is a positional argument; give it on the command line.")
        if not _given(action, argv):
            defaults[action.dest] = _as_option_value(action, value)
    parser.set_defaults(**defaults)
    return defaults


def parse_args_with_config(
    parser: argparse.ArgumentParser, argv: Sequence[str], subparsers: dict[str, argparse.ArgumentParser] | None = None
) -> argparse.Namespace:
    """Parse ``argv``; when it has ``--config FILE``, parse again with the file's values as defaults.

    Args:
        parser: the top-level parser.
        argv: the arguments.
        subparsers: ``{command: parser}``, to apply the file to the chosen subcommand's parser.
    """
    args = parser.parse_args(argv)
    config_path = getattr(args, "config", None)
    if config_path:
        target = (subparsers or {}).get(getattr(args, "command", None), parser)
        apply_config_file(target, config_path, argv)
        args = parser.parse_args(argv)
    return args


def _as_option_value(action: argparse.Action, value: Any) -> Any:
    """A config file's value as the option would hold it: one value of a repeatable option (``freeze: heads``)
    becomes a one-item list, not a string split into characters."""
    takes_list = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    if takes_list and value is not None and not isinstance(value, (list, tuple)):
        return [value]
    return value


def _given(action: argparse.Action, argv: Sequence[str]) -> bool:
    return any(arg.split("=", 1)[0] in action.option_strings for arg in argv)


# -- dataclass fields as options -----------------------------------------------------------------------------------


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of the dataclass ``cls`` to ``parser`` (in field order, grouped by
    ``metadata["group"]``), with the field's default.

    Field types map to options as follows: ``bool`` -> ``--flag/--no-flag``; ``int``/``float``/``str`` (or
    ``X | None``, where ``none`` on the command line means None) -> one value; ``list[str]`` -> repeatable
    (``metadata["nargs"] = "+"`` for one option with several values); ``dict`` -> a JSON object; a
    ``typing.Literal`` -> its choices. ``metadata`` may also give ``help``, ``flag`` (the option name),
    ``metavar`` and ``choices`` (for a ``str`` field whose values come from a table).
    """
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(cls):
        metadata = dict(field.metadata)
        group_name = metadata.get("group")
        target = parser
        if group_name:
            target = groups.setdefault(group_name, parser.add_argument_group(group_name))
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kind, optional, choices = _field_kind(hints[field.name])
        choices = metadata.get("choices", choices)
        help_text = metadata.get("help", "")
        if default not in (None, [], {}) and kind is not bool:
            help_text += f" (default: {default})"
        options: dict[str, Any] = {"dest": field.name, "default": default, "help": help_text}
        if metadata.get("metavar"):
            options["metavar"] = metadata["metavar"]
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is list:
            if metadata.get("nargs"):
                options["nargs"] = metadata["nargs"]
            else:
                options["action"] = "append"
        elif kind is dict:
            options["type"] = _json_object
            options.setdefault("metavar", "JSON")
        elif choices:  # None stays the default of an optional choice; it is not offered on the command line
            options.update(type=kind, choices=list(choices))
            options.setdefault("metavar", "{" + ",".join(map(str, choices)) + "}")
        else:
            options["type"] = _optional(kind) if optional else kind
        target.add_argument(metadata.get("flag", option_flag(field.name)), **options)


def _field_kind(annotation: Any) -> tuple[type, bool, tuple | None]:
    """``(base type, optional, Literal choices)`` of a field annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        annotation = members[0]
        origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), optional, choices
    if origin in (list, Sequence, tuple):
        return list, optional, None
    if origin is dict or annotation is dict:
        return dict, optional, None
    return annotation, optional, None


def _optional(kind: type):
    def convert(value: str):
        if value.strip().lower() in ("none", "null"):
            return None
        return kind(value)

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object ({error.msg}): {value!r}") from error
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {value!r}")
    return parsed
