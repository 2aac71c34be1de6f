"""A tiny name → object registry used for tasks, metrics, methods, backends and adapter formats (no if-chains).

A registry can find its members itself: ``discover`` (a callable, typically importing every module of the
registry's package) and the entry-point group ``entry_points`` (third-party packages declare
``[project.entry-points."cvit_bench.<kind>s"] name = "package.module:object"``) run once, on the first lookup.
Entry points are loaded lazily: their names are known at once (``names()``, ``in``), their code is imported on
the first ``get`` of that name (so evaluating a PEFT adapter never imports the package that defines another
adapter format). An entry point that names a module registers its members itself at import time; one that
names an object registers it, and the entry point's name must be the object's own name.

One way to register: a registry whose members carry their own name (``key``: ``name`` for methods and
backends, ``id`` for metrics) takes the member alone, ``REGISTRY.add(obj)`` or ``@REGISTRY.add`` on a class,
so the registered name and the member's name cannot disagree. Registries of plain values (functions, texts:
``key=None``) name each member with ``@REGISTRY.register(name)`` or ``REGISTRY.add(obj, name)``.

A plugin that fails to load is a :class:`~cvit_bench.errors.CvitError` naming the entry point.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, Generic, TypeVar

from .errors import CvitError, UnknownNameError

T = TypeVar("T")


def import_submodules(package: str, *, skip: tuple[str, ...] = ()) -> None:
    """Import every module of ``package`` (its members register themselves on import): package discovery,
    so that adding a member is adding a module, with no list to keep in sync."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name not in skip and not info.name.startswith("__"):
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    def __init__(self, kind: str, *, key: str | None = "name", entry_points: str | None = None,
                 discover: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self.key = key
        self.entry_point_group = entry_points
        self._discover = discover
        self._found = entry_points is None and discover is None
        self._items: dict[str, T] = {}
        self._lazy: dict[str, Any] = {}     # entry-point name → EntryPoint not loaded yet

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator for a registry of plain values (``key=None``): register the function under ``name``."""
        return lambda obj: self.add(obj, name)

    def name_of(self, obj: T) -> str:
        """The name ``obj`` carries itself (its ``key`` attribute)."""
        name = getattr(obj, self.key, None) if self.key else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} {obj!r} has no {self.key!r} to be registered under")
        return name

    def add(self, obj: T, name: str | None = None) -> T:
        """Register ``obj`` (returned, so ``@REGISTRY.add`` decorates a class) under its own name; a registry of
        plain values takes the ``name`` instead."""
        if self.key is not None:
            if name is not None:
                raise TypeError(f"a {self.kind} is registered under its own {self.key!r}, not a name given apart")
            name = self.name_of(obj)
        elif name is None:
            raise TypeError(f"a {self.kind} needs a name to be registered under")
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = obj
        return obj

    def find_members(self) -> None:
        """Run package discovery and load the entry points (once; later calls do nothing)."""
        if self._found:
            return
        self._found = True   # first: a member module that looks something up must not recurse
        if self._discover is not None:
            self._discover()
        if self.entry_point_group:
            from importlib.metadata import entry_points

            for ep in entry_points(group=self.entry_point_group):
                if ep.name not in self._items:
                    self._lazy[ep.name] = ep

    def _load(self, name: str) -> None:
        ep = self._lazy.pop(name)
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must say which one it is
            raise CvitError(f"plugin {ep.name!r} ({ep.value}) of entry-point group {self.entry_point_group!r} "
                            f"failed to load: {type(exc).__name__}: {exc}") from exc
        if not isinstance(obj, ModuleType) and self._items.get(name) is not obj:
            if self.key is not None and getattr(obj, self.key, None) != name:
                raise CvitError(f"plugin {ep.name!r} ({ep.value}) of entry-point group {self.entry_point_group!r} "
                                f"is a {self.kind} whose {self.key} is {getattr(obj, self.key, None)!r}, not {name!r}")
            self.add(obj, None if self.key else name)
        if name not in self._items:
            raise CvitError(f"plugin module {ep.value} (entry point {name!r}) did not register a {self.kind} "
                            f"named {name!r}")

    def get(self, name: str) -> T:
        self.find_members()
        if name in self._lazy:
            self._load(name)
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def __contains__(self, name: object) -> bool:
        self.find_members()
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        self.find_members()
        return sorted({*self._items, *self._lazy})

    def items(self) -> list[tuple[str, T]]:
        """Every member, loading every plugin."""
        self.find_members()
        for name in list(self._lazy):
            self._load(name)
        return sorted(self._items.items())
