"""Cut a list of ids into slices for `IN (...)` lists (the one helper every review module pages ids with)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

IN_LIST_SIZE = 900  # ids per IN (...) list: well below every engine's bound-parameter limit


def chunks(values: Sequence[T], size: int = IN_LIST_SIZE) -> Iterator[Sequence[T]]:
    """Consecutive slices of `values`, each at most `size` long (none for an empty sequence)."""
    for start in range(0, len(values), size):
        yield values[start:start + size]
