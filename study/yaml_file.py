"""Reading a search-space file: YAML, safely, with every way a file can be wrong turned into one message.

A search space is a small text file, so anything else is refused before it is parsed: a device or pipe, more than
`MAX_FILE_BYTES`, bytes that are not UTF-8. The loader is YAML's safe loader with the surprises taken out: a key
given twice is an error (YAML keeps the last silently), keys are names, `1:30` is text rather than a base-60
number (YAML 1.1's sexagesimal integers cost quadratic time to read), an integer beyond 64 bits or a value its tag
cannot hold is an error at its line, and aliases may not expand the document beyond `MAX_EXPANDED_NODES` values
(a "billion laughs" file is a few hundred bytes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from study.errors import StudyError

MAX_FILE_BYTES = 1_000_000
MAX_EXPANDED_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """YAML's safe loader with the rules of the module docstring."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            value = super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            shown = str(getattr(node, "value", ""))[:40]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown!r} as a {node.tag.rsplit(':', 1)[-1]} ({exc})", node.start_mark
            ) from None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            raise yaml.constructor.ConstructorError(None, None, "integer too large (over 64 bits)", node.start_mark)
        return value

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *anchor` merges a mapping: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is not a name: keys are words such as seeds or dropout_rate",
                    key_node.start_mark,
                )  # fmt: skip
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key[:40]!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1's implicit int and float patterns without their base-60 ("sexagesimal") branches.
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+)$"
    ),
    list("-+0123456789."),
)


class _CycleError(Exception):
    pass


def _expanded_size(value: Any, memo: dict[int, int], limit: int) -> int:
    """How many values `value` holds once every alias is expanded (stops counting past `limit`); raises _CycleError
    when an alias refers to a mapping or list that contains it."""
    if not isinstance(value, dict | list):
        return 1
    if id(value) in memo:
        if memo[id(value)] < 0:
            raise _CycleError
        return memo[id(value)]
    memo[id(value)] = -1  # being counted
    total = 1
    for child in value.values() if isinstance(value, dict) else value:
        total += _expanded_size(child, memo, limit)
        if total > limit:
            break
    memo[id(value)] = total
    return total


def read_yaml(path: str | Path) -> Any:
    """The parsed content of a search-space file; StudyError with one line for anything wrong with the file."""
    if not str(path).strip():
        raise StudyError("no search-space file named: give the path of a YAML file, e.g. search_spaces/tutorial.yaml")
    path = Path(path)
    try:
        if not path.is_file():
            kind = "a folder" if path.is_dir() else "not a regular file" if path.exists() else "missing"
            raise StudyError(f"cannot read search space {path}: it is {kind}; give the path of a YAML file")
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise StudyError(f"cannot read search space {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise StudyError(f"{path} is larger than {MAX_FILE_BYTES:,} bytes: a search space is a small text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path} is not UTF-8 text (byte {exc.start}): a search space is a YAML text file") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader
    except yaml.reader.ReaderError as exc:
        raise StudyError(f"{path} is not valid YAML: character #x{exc.character:04x} at byte {exc.position} "
                         f"is not allowed in YAML text") from None  # fmt: skip
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise StudyError(f"{path} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise StudyError(f"{path} nests too deeply to be a search space") from None
    try:
        size = _expanded_size(raw, {}, MAX_EXPANDED_NODES)
    except _CycleError:
        raise StudyError(f"{path} has an alias (*name) inside the value it names: it would never end") from None
    if size > MAX_EXPANDED_NODES:
        raise StudyError(
            f"{path} expands to more than {MAX_EXPANDED_NODES:,} values through its aliases (*name): "
            "a search space needs a few hundred"
        )
    return raw


def parse_value(text: str, where: str) -> Any:
    """One YAML value written on a command line (`30`, `[0.1, 0.5]`, `true`, `{patience: 10}`), read with the
    file's rules; StudyError naming `where` when it cannot be read."""
    if len(text) > 10_000:
        raise StudyError(f"{where}: the value is longer than 10,000 characters")
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise StudyError(f"{where}: {text!r} is not a YAML value ({problem})") from None
