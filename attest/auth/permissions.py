"""Roles and object checks.

- `admin`: configures sources and campaigns, runs syncs, remediation.
- `auditor`: reads everything, changes nothing.
- every signed-in user is a reviewer of what is routed to their identity, and sees only that.
Views use `@roles_required(...)` (403 for a signed-in user without the role) and object checks that
answer 404 for objects the user may not see, so a reviewer cannot learn that someone else's item exists.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import abort
from flask_login import current_user, login_required

F = TypeVar("F", bound=Callable[..., Any])


def roles_required(*roles: str) -> Callable[[F], F]:
    """Signed in and holding at least one of `roles`."""

    def decorator(view: F) -> F:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not any(current_user.has_role(r) for r in roles):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_roles = roles  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorator


admin_required = roles_required("admin")
read_all_required = roles_required("admin", "auditor")


def require_admin_write() -> None:
    """For write routes shared with auditors' read views: auditors may never change anything."""
    if not current_user.is_authenticated or not current_user.is_admin:
        abort(403)


def can_read_all(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and (user.is_admin or user.is_auditor))
