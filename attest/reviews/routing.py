"""Who reviews an item: pure functions, no session (the single source of the routing rules).

The rules (issue 6):
- `manager`: the account's identity's manager reviews. An orphaned account (no person) goes to the
  resource's owner, else the fallback reviewer.
- `resource_owner`: an owner of the resource the access is on (owners come from the source, mapped from
  their accounts to identities, or are named by an admin). With no owner: the fallback reviewer.
- `identity`: the named identity reviews everything in the stage.
- Nobody reviews their own access (the rule is `eligibility`'s): when the chosen reviewer is the person,
  another owner is tried first (owner stages), then the person's manager chain, else the fallback
  (`self_review: reassign`), or straight to the fallback (`self_review: fallback`). The fallback
  reviewer's own access goes up their manager chain. Nobody left: the admin queue
  `(None, "admin_queue")`.
- A candidate who cannot review (terminated, gone: `eligible` says no) is skipped like a missing one.
- Nothing applies (no manager, no owner, no usable fallback): unroutable, `(None, None)` (the definition
  needs a fallback reviewer).

`routed_by` says why the reviewer got the item: manager | resource_owner | named | orphan_owner |
fallback | self_review.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from attest.reviews import eligibility

STAGE_KINDS = ("manager", "resource_owner", "identity")
SELF_REVIEW_POLICIES = ("reassign", "fallback")


@dataclass(frozen=True, slots=True)
class Stage:
    """One reviewer stage with its named identity resolved to an id (`identity_id`, for kind `identity`)."""

    kind: str
    identity_id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"unknown stage reviewer {self.kind!r}; expected one of {', '.join(STAGE_KINDS)}")
        if self.kind == "identity" and self.identity_id is None:
            raise ValueError("a stage with reviewer: identity needs the identity")


def _always(_identity_id: int) -> bool:
    return True


def _no_manager(_identity_id: int) -> int | None:
    return None


def pick_owner(owner_ids: Iterable[int], person_id: int | None, eligible: Callable[[int], bool] = _always) -> int | None:
    """The owner who reviews: the lowest id among eligible owners who are not the person, for stable routing."""
    candidates = sorted({o for o in owner_ids if eligibility.may_review(o, [person_id], eligible)})
    return candidates[0] if candidates else None


def route(
    *,
    person_id: int | None,
    manager_id: int | None,
    owner_ids: Iterable[int],
    stage: Stage,
    fallback_id: int | None,
    self_review: str = "reassign",
    manager_of: Callable[[int], int | None] = _no_manager,
    eligible: Callable[[int], bool] = _always,
) -> tuple[int | None, str | None]:
    """Return (reviewer_id, routed_by) for one item at one stage; (None, None) when unroutable.

    person_id: the identity the account belongs to (None: an orphaned account); manager_id: that
    person's manager; owner_ids: identities owning the resource; fallback_id: the fallback reviewer;
    manager_of: the manager of any identity (used when the reviewer would review themselves).
    """
    if self_review not in SELF_REVIEW_POLICIES:
        raise ValueError(f"unknown self_review policy {self_review!r}")
    owners = [o for o in owner_ids if o is not None]

    def fallback() -> tuple[int | None, str | None]:
        return _fallback(person_id, fallback_id, "fallback", manager_of, eligible)

    reviewer: int | None
    routed_by: str
    if stage.kind == "identity":
        reviewer, routed_by = stage.identity_id, "named"
        if reviewer is not None and not eligible(reviewer):
            return fallback()
    elif stage.kind == "manager":
        if person_id is None:  # orphaned: the resource owner, else the fallback
            owner = pick_owner(owners, None, eligible)
            return (owner, "orphan_owner") if owner is not None else fallback()
        if manager_id is None or not eligible(manager_id):
            return fallback()
        reviewer, routed_by = manager_id, "manager"
    else:  # resource_owner
        owner = pick_owner(owners, person_id, eligible)
        if owner is not None:
            return owner, "resource_owner"
        if person_id is not None and person_id in owners and eligible(person_id):
            reviewer, routed_by = person_id, "resource_owner"  # the only owner is the person: self-review below
        else:
            return fallback()

    if reviewer is None:
        return fallback()
    if not eligibility.may_review(reviewer, [person_id]):
        return _reassign_self_review(person_id, fallback_id, self_review, manager_of, eligible)
    return reviewer, routed_by


def _reassign_self_review(person_id: int, fallback_id: int | None, policy: str,
                          manager_of: Callable[[int], int | None],
                          eligible: Callable[[int], bool]) -> tuple[int | None, str | None]:
    """The person would review their own access: `reassign` goes up their manager chain first, then to
    the fallback; `fallback` goes to the fallback first. Nobody left: the admin queue."""
    if policy == "reassign":
        reviewer, how = eligibility.replacement(person_id, [person_id], fallback_id=fallback_id,
                                                manager_of=manager_of, eligible=eligible)
        return (reviewer, "self_review") if reviewer is not None else (None, eligibility.ADMIN_QUEUE)
    return _fallback(person_id, fallback_id, "self_review", manager_of, eligible)


def _fallback(person_id: int | None, fallback_id: int | None, routed_by: str,
              manager_of: Callable[[int], int | None],
              eligible: Callable[[int], bool]) -> tuple[int | None, str | None]:
    """The fallback reviewer. No usable fallback: unroutable `(None, None)` (the definition lacks one).
    The fallback reviewer's own access (they cannot take it, whatever the policy) goes up their manager
    chain, as anyone's own access does; nobody there: the admin queue."""
    if fallback_id is None or not eligible(fallback_id):
        return None, None
    if eligibility.may_review(fallback_id, [person_id], eligible):
        return fallback_id, routed_by
    boss = eligibility.first_eligible(eligibility.manager_chain(fallback_id, manager_of), [person_id], eligible)
    if boss is not None:
        return boss, "self_review"
    return None, eligibility.ADMIN_QUEUE
