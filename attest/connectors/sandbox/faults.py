"""Faults a sandbox upstream can be told to inject into a paged listing (what a real upstream or a proxy
in front of it gets wrong): `{"empty": True}` no items and no next page; `{"cut_at_page": k}` page k with
half its items and no next page; `{"drop_next_at": k}` page k whole but no next page; `{"repeat_next":
True}` a next link or cursor that points at the same page again (each fake answers that one itself)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def page_under_fault(fault: Mapping[str, Any], page: int, items: Sequence[T]) -> tuple[list[T], bool]:
    """(the items page `page` answers, whether it may still say a next page follows) under `fault`."""
    if fault.get("empty"):
        return [], False
    if fault.get("cut_at_page") == page:
        return list(items[: len(items) // 2]), False
    if fault.get("drop_next_at") == page:
        return list(items), False
    return list(items), True
