"""Name → builder catalogs (models, datasets, optimizers, probes), torchvision style.

Builders register with a decorator in the module that defines them; the config validator lists
the names (``unknown model 'resnet21'; known: …``). Registering has no side effects beyond the
catalog entry.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

Builder = TypeVar("Builder", bound=Callable)


class UnknownName(KeyError):
    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}")


class Catalog(Generic[Builder]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Builder] = {}

    def register(self, name: str) -> Callable[[Builder], Builder]:
        def add(builder: Builder) -> Builder:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return add

    def get(self, name: str) -> Builder:
        try:
            return self._builders[name]
        except KeyError:
            raise UnknownName(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def known_names() -> dict[str, list[str]]:
    """Every catalog's names, keyed as the spec's ``Check.catalog`` refers to them."""
    from jobs.data import DATASETS
    from jobs.models import MODELS
    from jobs.optim import OPTIMIZERS
    from jobs.probes import PROBES

    return {
        "models": MODELS.names(),
        "datasets": DATASETS.names(),
        "optimizers": OPTIMIZERS.names(),
        "probes": PROBES.names(),
    }
