"""One small registry type shared by datasets, encoders and balancing methods.

A registry maps a name to a factory. ``create`` checks the name and the keyword
arguments *before* calling the factory, so a typo in a config is refused with a
message that lists what would have been accepted, long before any trial starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@REGISTRY.register("name")`` on a class or factory function."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
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

    def check_kwargs(self, name: str, kwargs: dict[str, Any]) -> None:
        accepted = self.accepted_kwargs(name)
        if not accepted:
            return
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r} does not take {', '.join(unknown)}; "
                f"it takes: {', '.join(sorted(accepted)) or 'no arguments'}"
            )

    def create(self, name: str, **kwargs: Any) -> T:
        self.check_kwargs(name, kwargs)
        return self.get(name)(**kwargs)
