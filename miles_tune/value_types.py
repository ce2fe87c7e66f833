"""What a setting accepts, read from its annotation (or its default): one check for every setting.

``TrainConfig.validate`` checks its fields and :class:`~miles_tune.registry.Registry` checks a
factory's keyword arguments (datasets, encoders, balancing methods) with the same
:class:`ValueType`, so ``--set lr=true``, ``--set data.n_train=abc`` and
``--set method_args.tau=abc`` are all refused alike, naming the setting.

Annotations are read as text (``from __future__ import annotations`` makes them strings, and a
file dataset's factory borrows its class's), so nothing is evaluated; an annotation this
module does not understand accepts anything and leaves the check to the code that uses it.
"""

from __future__ import annotations

import ast
import inspect
import numbers
import os
import reprlib
from dataclasses import dataclass
from typing import Any

_SEQUENCES = {"list", "tuple", "Sequence", "MutableSequence", "Iterable", "Collection"}
_MAPPINGS = {"dict", "Mapping", "MutableMapping"}
_PATHS = {"Path", "PurePath", "PathLike"}


@dataclass(frozen=True)
class ValueType:
    """What a setting accepts: ``kind`` is a scalar kind, ``seq``, ``map``, ``literal``,
    ``union`` or ``any``; ``args`` holds element types, literal values or union members."""

    kind: str
    args: tuple[Any, ...] = ()

    def accepts(self, value: Any) -> bool:
        k = self.kind
        if k == "any":
            return True
        if k == "int":
            return isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if k == "float":
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                return False
            try:
                float(value)  # an int too large for a float is no use as one
            except OverflowError:
                return False
            return True
        if k == "bool":
            return isinstance(value, bool)
        if k == "str":
            return isinstance(value, str)
        if k == "none":
            return value is None
        if k == "path":
            return isinstance(value, (str, os.PathLike))
        if k == "literal":  # 1 == True, so compare types too
            return any(type(value) is type(v) and value == v for v in self.args)
        if k == "seq":
            return isinstance(value, (list, tuple)) and all(self.args[0].accepts(v) for v in value)
        if k == "map":
            key, val = self.args
            pairs = value.items() if isinstance(value, dict) else ()
            return isinstance(value, dict) and all(key.accepts(a) and val.accepts(b) for a, b in pairs)
        if k == "union":
            return any(t.accepts(value) for t in self.args)
        raise AssertionError(f"unknown value type {k!r}")  # a bug in this module

    def describe(self, plural: bool = False) -> str:
        """Words for a message: ``an integer``, ``a list of numbers``, ``a string or null``."""
        k = self.kind
        singular = {
            "any": "anything",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "none": "null",
            "path": "a path",
        }
        many = {
            "any": "anything",
            "int": "integers",
            "float": "numbers",
            "bool": "booleans",
            "str": "strings",
            "none": "nulls",
            "path": "paths",
        }
        if k in singular:
            return many[k] if plural else singular[k]
        if k == "literal":
            return "one of " + ", ".join(repr(v) for v in self.args)
        if k == "seq":
            inner = self.args[0]
            text = "lists" if plural else "a list"
            return text if inner == _ANY_TYPE else f"{text} of {inner.describe(True)}"
        if k == "map":
            key, val = self.args
            text = "mappings" if plural else "a mapping"
            if val != _ANY_TYPE:
                text += f" of {key.describe(True)} to {val.describe(True)}"
            elif key != _ANY_TYPE:
                text += f" with {key.describe(True)} as keys"
            return text
        parts: list[str] = []
        for t in self.args:
            words = t.describe(plural)
            if words not in parts:
                parts.append(words)
        return " or ".join(parts)


_ANY_TYPE = ValueType("any")


def _union(members: list[ValueType]) -> ValueType:
    flat: list[ValueType] = []
    for m in members:
        for t in m.args if m.kind == "union" else (m,):
            if t not in flat:
                flat.append(t)
    if any(t.kind == "any" for t in flat):
        return _ANY_TYPE
    return flat[0] if len(flat) == 1 else ValueType("union", tuple(flat))


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # typing.Sequence, os.PathLike, collections.abc.Mapping
        return node.attr
    return None


def _from_ast(node: ast.expr) -> ValueType:
    if isinstance(node, ast.Constant):
        if node.value is None:
            return ValueType("none")
        if isinstance(node.value, str):  # a quoted forward reference
            return parse_annotation(node.value)
        return _ANY_TYPE
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([_from_ast(node.left), _from_ast(node.right)])
    if isinstance(node, ast.Subscript):
        base = _name(node.value)
        items = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Optional":
            return _union([_from_ast(items[0]), ValueType("none")])
        if base == "Union":
            return _union([_from_ast(i) for i in items])
        if base == "Annotated":
            return _from_ast(items[0])
        if base == "Literal":
            if all(isinstance(i, ast.Constant) for i in items):
                return ValueType("literal", tuple(i.value for i in items))  # type: ignore[attr-defined]
            return _ANY_TYPE
        if base in _PATHS:
            return ValueType("path")
        if base in _SEQUENCES:
            if base == "tuple" and not (len(items) == 2 and isinstance(items[1], ast.Constant)):
                return ValueType("seq", (_ANY_TYPE,))  # fixed-length tuple: only the container
            return ValueType("seq", (_from_ast(items[0]),))
        if base in _MAPPINGS and len(items) == 2:
            return ValueType("map", (_from_ast(items[0]), _from_ast(items[1])))
        return _ANY_TYPE
    name = _name(node)
    if name in ("int", "float", "bool", "str"):
        return ValueType(name)
    if name == "None":
        return ValueType("none")
    if name in _PATHS:
        return ValueType("path")
    if name in _SEQUENCES:
        return ValueType("seq", (_ANY_TYPE,))
    if name in _MAPPINGS:
        return ValueType("map", (_ANY_TYPE, _ANY_TYPE))
    return _ANY_TYPE  # Any, object, a class this module does not know


def parse_annotation(annotation: Any) -> ValueType:
    """The :class:`ValueType` of an annotation (a string or a typing object); ``any`` if unknown."""
    if annotation is inspect.Parameter.empty:
        return _ANY_TYPE
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return _ANY_TYPE
    return _from_ast(node)


def parameter_type(param: inspect.Parameter) -> ValueType:
    """From the annotation, else from the default (int, float, bool, str); a None default adds None."""
    if param.annotation is not inspect.Parameter.empty:
        vt = parse_annotation(param.annotation)
    elif isinstance(param.default, bool):
        vt = ValueType("bool")
    elif isinstance(param.default, (int, float, str)):
        vt = ValueType(type(param.default).__name__)
    else:
        vt = _ANY_TYPE
    if param.default is None:
        vt = _union([vt, ValueType("none")])
    return vt


_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def show(value: Any) -> str:
    """A value for a one-line message: its repr, shortened."""
    return _short.repr(value)


def show_key(key: Any) -> str:
    """A key as typed when it is a plain name, else its repr (a key may hold a newline)."""
    if isinstance(key, str) and key and key.isprintable() and not any(c.isspace() for c in key):
        return key
    return show(key)
