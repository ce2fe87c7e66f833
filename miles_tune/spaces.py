"""Search spaces as data: one YAML file per dataset in ``search_spaces/``, validated on load.

A file looks like::

    dataset: synthetic
    data: {form: vector}             # dataset keyword arguments
    train: {epochs: 20, batch_size: 128, metric: acc}   # fixed TrainConfig settings
    resources: {gpus_per_trial: 0.25, cpus_per_trial: 1}
    num_samples: 8                   # default --num-samples
    methods:
      miles:
        fixed: {variant: reset}      # method arguments that are not searched
        space:                       # searched: a TrainConfig setting or a method argument
          lr: {loguniform: [1.0e-4, 1.0e-2]}
          tau: {uniform: [0.0, 0.5]}
          mu: {uniform: [0.01, 1.0]}
        points:                      # evaluated first (the paper's known good settings)
          - {lr: 1.0e-3, tau: 0.2, mu: 0.5}

Distributions: ``uniform: [lo, hi]``, ``loguniform: [lo, hi]`` (lo > 0), ``randint: [lo, hi]``
(both inclusive), ``choice: [a, b, ...]``. ``uniform`` and ``loguniform`` draw floats, so an
integer setting (``batch_size``, MSES's ``patience``) takes ``randint`` or ``choice``. Every
section's type, every bound and every point is checked against the method's and the loop's
own validation, so a space that would make trials fail (μ = 0, τ < 0, a misspelt key, a
list where a mapping belongs) is refused before Ray starts, naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from miles_tune.config import TrainConfig
from miles_tune.errors import ConfigError
from miles_tune.value_types import show, show_key

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
TOP_LEVEL = {"dataset", "data", "train", "resources", "num_samples", "methods", "description"}
METHOD_KEYS = {"space", "fixed", "points"}
RESOURCE_KEYS = {"gpus_per_trial", "cpus_per_trial"}


class SearchSpaceError(ConfigError):
    """A search-space file is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class Param:
    name: str
    distribution: str
    args: tuple[Any, ...]  # (lo, hi) or the choices

    def candidates(self) -> list[Any]:
        """Values that must all be valid: the bounds, or every choice. A continuous
        distribution draws floats, so its bounds are checked as floats: ``uniform`` over an
        integer setting (``batch_size``, MSES's ``patience``) is refused, naming the key."""
        if self.distribution in ("uniform", "loguniform"):
            return [float(a) for a in self.args]
        return list(self.args)

    def contains(self, value: Any) -> bool:
        if self.distribution == "choice":
            return value in self.args
        lo, hi = self.args
        return isinstance(value, (int, float)) and lo <= value <= hi

    def to_dict(self) -> dict[str, list[Any]]:
        """As a search-space file writes it: ``{uniform: [0.0, 0.5]}``."""
        return {self.distribution: list(self.args)}

    def describe(self) -> str:
        """One line for a param column: ``uniform(0, 0.5)``."""
        return f"{self.distribution}({', '.join(str(a) for a in self.args)})"

    def to_tune(self) -> Any:
        from ray import tune

        if self.distribution == "uniform":
            return tune.uniform(*self.args)
        if self.distribution == "loguniform":
            return tune.loguniform(*self.args)
        if self.distribution == "randint":
            return tune.randint(self.args[0], self.args[1] + 1)  # Tune's upper bound is exclusive
        return tune.choice(list(self.args))


@dataclass
class MethodSpace:
    method: str
    params: dict[str, Param]
    fixed: dict[str, Any] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SearchSpace:
    path: Path
    dataset: str
    data: dict[str, Any]
    train: dict[str, Any]
    resources: dict[str, float]
    num_samples: int
    methods: dict[str, MethodSpace]

    def method(self, name: str) -> MethodSpace:
        if name not in self.methods:
            raise SearchSpaceError(
                f"{self.path}: no search space for method {name!r}; this file has {sorted(self.methods)}"
            )
        return self.methods[name]

    def fix(self, method: str, names: set[str]) -> None:
        """Stop searching ``names`` (they are set elsewhere): drop them from the space and the points."""
        ms = self.method(method)
        ms.params = {k: v for k, v in ms.params.items() if k not in names}
        ms.points = [{k: v for k, v in p.items() if k not in names} for p in ms.points]
        ms.points = [p for i, p in enumerate(ms.points) if p and p not in ms.points[:i]]

    def base_config(
        self, method: str, fusion: str, seed: int, overrides: dict[str, Any] | None = None
    ) -> dict:
        """The fixed part of every trial's TrainConfig (sampled params are added per trial)."""
        cfg = {
            **self.train,
            "dataset": self.dataset,
            "data": dict(self.data),
            "method": method,
            "method_args": dict(self.method(method).fixed),
            "fusion": fusion,
            "seed": seed,
        }
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return cfg

    def as_used(
        self, method: str, base: dict[str, Any], num_samples: int, resources: dict[str, float]
    ) -> dict[str, Any]:
        """The search as it ran, in this file's own format (``--space`` reads it back): one
        method, its fixed settings after every ``--set``, what was searched, the known points."""
        ms = self.method(method)
        set_by_search = ("dataset", "data", "method", "method_args", "seed")
        return {
            "description": f"the space of one search, from {self.path}",
            "dataset": base["dataset"],
            "data": dict(base.get("data", {})),
            "train": {k: v for k, v in base.items() if k not in set_by_search},
            "resources": dict(resources),
            "num_samples": num_samples,
            "methods": {
                method: {
                    "fixed": dict(base.get("method_args", {})),
                    "space": {k: p.to_dict() for k, p in ms.params.items()},
                    "points": [dict(p) for p in ms.points],
                }
            },
        }


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> TrainConfig:
    """A trial's TrainConfig: sampled params go to TrainConfig fields or to the method's arguments."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    method_args = base.get("method_args", {})
    if not isinstance(method_args, dict):  # e.g. --set method_args=abc
        raise ConfigError(f"method_args must be a mapping, got {show(method_args)}")
    cfg = {**base, "method_args": dict(method_args)}
    for key, value in params.items():
        head, dot, entry = key.partition(".")
        if key in fields:
            cfg[key] = value
        elif dot and head == "lr_mult":  # one encoder's multiplier, as PBT mutates it: lr_mult.<m>
            cfg["lr_mult"] = {**(cfg.get("lr_mult") or {}), entry: value}
        else:
            cfg["method_args"][key] = value
    return TrainConfig.from_dict(cfg)


def resolve_path(name_or_path: str | Path) -> Path:
    """A YAML file's path as given, else the shipped space of that name (a folder named like a
    dataset in the working directory, such as its data, must not hide the shipped space)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    return SPACES_DIR / f"{name_or_path}.yaml"


def load_search_space(name_or_path: str | Path) -> SearchSpace:
    path = resolve_path(name_or_path)
    if not path.is_file():
        available = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
        raise SearchSpaceError(f"no search space {str(name_or_path)!r} ({path}); shipped: {available}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:  # its message spans lines: keep the error on one
        raise SearchSpaceError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    return parse_search_space(raw, path)


def _fail(path: Path, where: str, message: str) -> SearchSpaceError:
    return SearchSpaceError(f"{path}: {where}: {message}")


def _number(value: Any) -> bool:
    """A finite int or float, not a bool (YAML's true is not 1 here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _mapping(path: Path, where: str, value: Any, what: str = "a mapping") -> dict[Any, Any]:
    """``value`` if it is a mapping (an absent or empty section is ``{}``), else refuse naming the key."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, where, f"expected {what}, got {show(value)}")
    return value


def _parse_param(path: Path, where: str, name: str, spec: Any) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _fail(path, where, f"expected one distribution such as {{uniform: [0, 1]}}, got {show(spec)}")
    ((dist, args),) = spec.items()
    if dist not in DISTRIBUTIONS:
        raise _fail(path, where, f"unknown distribution {dist!r}; use one of {DISTRIBUTIONS}")
    if not isinstance(args, list) or not args:
        raise _fail(path, where, f"{dist} needs a list of values, got {show(args)}")
    if dist == "choice":
        return Param(name, dist, tuple(args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise _fail(path, where, f"{dist} needs [low, high] numbers, got {show(args)}")
    lo, hi = args
    if not (_number(lo) and _number(hi)) or lo >= hi:
        raise _fail(path, where, f"{dist} bounds [{show(lo)}, {show(hi)}] must be finite and increasing")
    if dist == "loguniform" and lo <= 0:
        raise _fail(path, where, f"loguniform needs a positive lower bound, got {lo}")
    if dist == "randint" and not all(isinstance(a, int) for a in args):
        raise _fail(path, where, f"randint needs integer bounds, got {show(args)}")
    return Param(name, dist, (lo, hi))


def _check_trial(path: Path, where: str, base: dict[str, Any], values: dict[str, Any]) -> None:
    """Build the method and validate the TrainConfig exactly as a trial would."""
    from miles_tune.balance import create_method

    try:
        cfg = trial_config(base, values)
        cfg.validate()
        create_method(cfg.method, **cfg.method_args)
    except (ValueError, TypeError) as exc:
        raise _fail(path, where, str(exc)) from exc


def parse_search_space(raw: Any, path: Path) -> SearchSpace:
    from miles_tune.balance import METHODS
    from miles_tune.data import DATASETS

    if not isinstance(raw, dict):
        raise _fail(path, "top level", f"expected a mapping, got {show(raw)}")
    unknown = sorted((k for k in raw if k not in TOP_LEVEL), key=str)
    if unknown:
        raise _fail(path, "top level", f"unknown key(s) {unknown}; allowed: {sorted(TOP_LEVEL)}")
    for key in ("dataset", "methods"):
        if key not in raw:
            raise _fail(path, "top level", f"missing {key!r}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail(path, "description", f"expected text, got {show(description)}")
    dataset = raw["dataset"]
    if not isinstance(dataset, str):
        raise _fail(path, "dataset", f"expected a dataset name, got {show(dataset)}")
    data = _mapping(path, "data", raw.get("data"), "a mapping of dataset options")
    try:
        DATASETS.get(dataset)
        DATASETS.check_kwargs(dataset, data, prefix="data.")
    except ValueError as exc:
        raise _fail(path, "dataset/data", str(exc)) from exc
    train = _mapping(path, "train", raw.get("train"), "a mapping of training settings")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted((k for k in train if k not in fields), key=str)
    if bad:
        raise _fail(path, "train", f"unknown setting(s) {bad}")
    if "metric" not in train:
        raise _fail(path, "train.metric", "missing: the metric M that u and the search both use")
    for key in ("dataset", "data", "method", "method_args", "seed"):
        if key in train:
            raise _fail(path, f"train.{key}", "is set by the search itself; remove it here")
    try:  # the section alone first, so that its errors name it rather than a method
        TrainConfig.from_dict(dict(train)).validate()
    except ValueError as exc:
        raise _fail(path, "train", str(exc)) from exc
    resources = _mapping(path, "resources", raw.get("resources"))
    bad = sorted((k for k in resources if k not in RESOURCE_KEYS), key=str)
    if bad:
        raise _fail(path, "resources", f"unknown key(s) {bad}; allowed: {sorted(RESOURCE_KEYS)}")
    for key, value in resources.items():
        if not _number(value) or value < 0:
            raise _fail(path, f"resources.{key}", f"must be a number >= 0, got {show(value)}")
    gpus = resources.get("gpus_per_trial", 0)
    if gpus > 1 and gpus != int(gpus):
        raise _fail(path, "resources.gpus_per_trial", f"fractions are allowed only below 1, got {gpus}")
    num_samples = raw.get("num_samples", 8)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise _fail(path, "num_samples", f"must be a positive integer, got {show(num_samples)}")

    methods: dict[str, MethodSpace] = {}
    if not isinstance(raw["methods"], dict) or not raw["methods"]:
        raise _fail(path, "methods", "expected a non-empty mapping of method name to its space")
    for method, entry in raw["methods"].items():
        where = f"methods.{show_key(method)}"
        if method not in METHODS.names():
            raise _fail(path, where, f"unknown balancing method; registered: {METHODS.names()}")
        entry = _mapping(path, where, entry, "a mapping with space, fixed and points")
        bad = sorted((k for k in entry if k not in METHOD_KEYS), key=str)
        if bad:
            raise _fail(path, where, f"unknown key(s) {bad}; allowed: {sorted(METHOD_KEYS)}")
        fixed = _mapping(path, f"{where}.fixed", entry.get("fixed"), "a mapping of method arguments")
        space = _mapping(path, f"{where}.space", entry.get("space"), "a mapping of parameter to distribution")
        accepted = METHODS.accepted_kwargs(method)
        params = {}
        for name, spec in space.items():
            pwhere = f"{where}.space.{show_key(name)}"
            if name not in fields and accepted and name not in accepted:
                raise _fail(
                    path,
                    pwhere,
                    f"neither a training setting nor an argument of {method!r} (it takes {sorted(accepted)})",
                )
            if name in ("dataset", "data", "method", "method_args", "fusion", "seed"):
                raise _fail(path, pwhere, "cannot be searched")
            params[name] = _parse_param(path, pwhere, name, spec)
        base = {**train, "dataset": dataset, "data": data, "method": method, "method_args": dict(fixed)}
        # every bound (and every choice) must make a valid trial, one parameter at a time
        _check_trial(path, f"{where}.fixed", base, {})
        for p in params.values():
            for value in p.candidates():
                _check_trial(path, f"{where}.space.{show_key(p.name)}", base, {p.name: value})
        points = entry.get("points")
        if points is None:
            points = []
        if not isinstance(points, list):
            raise _fail(path, f"{where}.points", f"expected a list of mappings, got {show(points)}")
        for i, point in enumerate(points):
            pwhere = f"{where}.points[{i}]"
            if not isinstance(point, dict):
                raise _fail(path, pwhere, f"expected a mapping, got {show(point)}")
            extra = sorted((k for k in point if k not in params), key=str)
            if extra:
                known = sorted(params, key=str)
                raise _fail(path, pwhere, f"sets {extra}, which are not in the space {known}")
            missing = sorted(set(params) - set(point), key=str)
            if missing:
                raise _fail(path, pwhere, f"lacks {missing}; a point must set every searched parameter")
            outside = [k for k, v in point.items() if not params[k].contains(v)]
            if outside:
                raise _fail(path, pwhere, f"{outside} outside the space")
            _check_trial(path, pwhere, base, point)
        methods[method] = MethodSpace(method, params, dict(fixed), [dict(p) for p in points])
    return SearchSpace(
        path=path,
        dataset=dataset,
        data=dict(data),
        train=dict(train),
        resources={
            "gpus_per_trial": float(gpus),
            "cpus_per_trial": float(resources.get("cpus_per_trial", 1)),
        },
        num_samples=num_samples,
        methods=methods,
    )


def list_search_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
