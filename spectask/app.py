"""What `--app` names: an application's generated package, its worker and its sample payloads.

The framework knows no task type: every command that needs one finds the application the way
`celery -A`, `faststream run mod:app` and `taskiq worker mod:broker` do, from `--app
package.module:attribute` (or `SPECTASK_APP`). The attribute may be

- a `spectask.Application` (the generated package, a worker app with its handlers, samples);
- a generated `WorkerApp` with its handlers registered (the package is the one it came from);
- a generated package itself (`--app generated`): enough for produce, collect, status, dlq.

The current directory goes first on `sys.path`, so `spectask worker --app myproject.worker:app`
works from the project's directory without PYTHONPATH.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from spectask.errors import ConfigError
from spectask.samples import PayloadFactory

APP_VARIABLE = "SPECTASK_APP"
_HINT = (
    "point --app (or SPECTASK_APP) at package.module:attribute, where the attribute is a "
    "spectask.Application, a generated WorkerApp with its handlers, or the generated package"
)


@dataclass(frozen=True)
class Application:
    """An application on spectask: its generated package and what its commands run.

    `worker` is the generated `WorkerApp` with every handler registered (needed by `spectask
    worker` only); `samples` maps message types to payload factories for `spectask produce`
    without `--task`, and `default_mix` is what it submits when no `--types` are given.
    """

    generated: ModuleType
    worker: Any = None
    samples: Mapping[str, PayloadFactory] = field(default_factory=dict)
    default_mix: Sequence[str] = ()

    def module(self, name: str) -> ModuleType:
        """A module of the generated package (`topology`, `models`, `producer`, ...)."""
        full = f"{self.generated.__name__}.{name}"
        try:
            return importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
            raise ConfigError(
                f"the generated package {self.generated.__name__!r} has no module {name!r}; "
                "its spec needs the spectask protocol document (spectask.asyncapi.yaml) so the "
                "generator writes every role's module; run `spectask generate` again"
            ) from None

    @property
    def topology(self) -> Any:
        """The generated `TOPOLOGY` (exchanges, queues, priorities)."""
        return self.module("topology").TOPOLOGY

    @property
    def policies(self) -> Mapping[str, Any]:
        """The generated `POLICIES` by task type."""
        policies: Mapping[str, Any] = self.module("topology").POLICIES
        return policies

    @property
    def mix(self) -> Sequence[str]:
        """The sample message types `produce` submits by default."""
        return tuple(self.default_mix) or tuple(self.samples)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise ConfigError(
                f"cannot import {name!r} (--app): no module named {exc.name!r}"
                f"\n  hint: run from your project's directory (it is put on sys.path), "
                "install your project, or run `spectask generate` if it is the generated package"
            ) from None
        raise


def _package_of(obj: object) -> ModuleType:
    module = type(obj).__module__
    return _import(module.rpartition(".")[0] or module)


def load_app(target: str | None = None) -> Application:
    """The application named by `target`, else by `SPECTASK_APP`; a clear error otherwise."""
    target = target or os.environ.get(APP_VARIABLE, "").strip() or None
    if not target:
        raise ConfigError(f"no application given; {_HINT} (e.g. --app myproject.app:app)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = target.partition(":")
    module = _import(module_name)
    obj: object = module
    if attribute:
        try:
            obj = getattr(module, attribute)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(obj, Application):
        return obj
    if isinstance(obj, ModuleType):
        if hasattr(obj, "topology") or _has_topology(obj):
            return Application(generated=obj)
        raise ConfigError(f"--app {target}: module {obj.__name__!r} is not a generated package")
    if hasattr(obj, "handlers") and hasattr(obj, "run"):
        return Application(generated=_package_of(obj), worker=obj)
    raise ConfigError(f"--app {target} is a {type(obj).__name__}; {_HINT}")


def _has_topology(package: ModuleType) -> bool:
    try:
        importlib.import_module(f"{package.__name__}.topology")
    except ModuleNotFoundError:
        return False
    return True
