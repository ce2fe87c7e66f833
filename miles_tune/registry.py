"""One small registry type shared by datasets, encoders and balancing methods.

A registry maps a name to a factory. ``create`` checks the name, the keyword names and
each value's type (from the factory's annotations, or its default when it has none:
:mod:`miles_tune.value_types`) *before* calling the factory, so a typo or a wrong-typed
value in a config is refused with a message naming the keyword, long before any trial starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from miles_tune.errors import ConfigError
from miles_tune.value_types import parameter_type, show, show_key

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@REGISTRY.register("name")`` on a class or factory function."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")  # a bug, not input
            self._factories[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        if not isinstance(name, str) or name not in self._factories:
            raise ConfigError(f"unknown {self.kind} {show(name)}; available: {', '.join(self.names())}")
        return self._factories[name]

    def accepted_kwargs(self, name: str) -> dict[str, inspect.Parameter]:
        """Keyword arguments the factory accepts (empty dict means: anything)."""
        params = inspect.signature(self.get(name)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return {}
        return {
            k: p
            for k, p in params.items()
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        }

    def check_kwargs(
        self, name: str, kwargs: dict[str, Any], *, prefix: str = "", complete: bool = False
    ) -> None:
        """Refuse unknown keywords and values of the wrong type, naming ``prefix + keyword``
        (``data.n_train``); with ``complete``, also a missing required keyword."""
        accepted = self.accepted_kwargs(name)
        if not isinstance(kwargs, dict):
            what = prefix.rstrip(".") if prefix else f"the arguments of {self.kind} {name!r}"
            raise ConfigError(f"{what} must be a mapping, got {show(kwargs)}")
        if not accepted:
            return
        unknown = sorted((k for k in kwargs if k not in accepted), key=str)
        if unknown:
            raise ConfigError(
                f"{self.kind} {name!r} does not take {', '.join(prefix + show_key(k) for k in unknown)}; "
                f"it takes: {', '.join(sorted(accepted)) or 'no arguments'}"
            )
        for key, value in kwargs.items():
            vt = parameter_type(accepted[key])
            if not vt.accepts(value):
                raise ConfigError(
                    f"{self.kind} {name!r}: {prefix}{key} must be {vt.describe()}, got {show(value)}"
                )
        if complete:
            empty = inspect.Parameter.empty
            missing = [k for k, p in accepted.items() if p.default is empty and k not in kwargs]
            if missing:
                raise ConfigError(f"{self.kind} {name!r} needs {', '.join(f'{prefix}{k}' for k in missing)}")

    def create(self, name: str, **kwargs: Any) -> T:
        self.check_kwargs(name, kwargs, complete=True)
        return self.get(name)(**kwargs)
