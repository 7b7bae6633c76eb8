"""Fault injection for resume tests: wrap a stage's chunk function so that one call dies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DiesOnCall:
    """Calls `real`, except call number `dies_on` raises KeyboardInterrupt, as a killed worker would."""

    def __init__(self, real: Callable[..., Any], dies_on: int | None = None) -> None:
        self.real, self.dies_on, self.calls = real, dies_on, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.dies_on:
            raise KeyboardInterrupt("worker killed")
        return self.real(*args, **kwargs)
