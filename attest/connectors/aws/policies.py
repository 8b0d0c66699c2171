"""What an AWS policy document allows, judged on the document alone (pure; unit-tested on payloads).

Which documents make their holder an administrator (`admin_statements`), able to manage IAM
(`iam_admin_statements`), which SCPs deny or allow IAM, who a role's trust policy lets in, which
customer-managed policies of an account are admin, and whether a permissions boundary keeps IAM away.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

# AWS managed policies that make their holder an administrator (or close enough to become one): privileged.
PRIVILEGED_MANAGED = ("AdministratorAccess", "PowerUserAccess", "IAMFullAccess")
# ...of which these can manage IAM itself, and so can make anyone an administrator: the last-administrator
# guard counts only these (PowerUserAccess allows everything but iam:*, organizations:* and account:*, so
# its holder cannot grant itself or anyone else more: https://docs.aws.amazon.com/aws-managed-policy/latest/reference/PowerUserAccess.html).
IAM_ADMIN_MANAGED = ("AdministratorAccess", "IAMFullAccess")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _document(doc: Any) -> dict[str, Any]:
    """A policy document as a dict (IAM returns it URL-encoded when botocore does not decode it)."""
    if isinstance(doc, dict):
        return doc
    if not doc:
        return {}
    text = str(doc)
    if text.lstrip().startswith("%7B") or "%22" in text:
        text = unquote(text)
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def admin_statements(doc: Any) -> list[str]:
    """Why a policy document makes its holder an administrator: reasons, empty when it does not.

    Counted: Allow of `*` / `*:*` on `*`, Allow of `iam:*` on `*` (IAM full access is an administrator
    in waiting), and Allow with NotAction on `*` (PowerUserAccess-style "everything but").
    """
    reasons: list[str] = []
    for stmt in _as_list(_document(doc).get("Statement")):
        if not isinstance(stmt, dict) or stmt.get("Effect") != "Allow":
            continue
        resources = [str(r) for r in _as_list(stmt.get("Resource"))]
        if "*" not in resources:
            continue
        actions = [str(a).lower() for a in _as_list(stmt.get("Action"))]
        if "*" in actions or "*:*" in actions:
            reasons.append("allows *:* on *")
        elif "iam:*" in actions:
            reasons.append("allows iam:* on *")
        elif "NotAction" in stmt:
            reasons.append("allows everything but NotAction on *")
    return reasons


def _actions(stmt: Mapping[str, Any], key: str) -> list[str]:
    return [str(a).lower() for a in _as_list(stmt.get(key))]


def _covers_iam(actions: Iterable[str]) -> bool:
    """Whether an action list names all of IAM (`*`, `*:*`, `iam:*`)."""
    return any(a in ("*", "*:*", "iam:*") for a in actions)


def iam_admin_statements(doc: Any) -> list[str]:
    """Why a policy document lets its holder manage IAM on every resource (and so make anyone, itself
    included, an administrator): reasons, empty when it does not. Stricter than admin_statements: an
    Allow with NotAction counts only when its NotAction leaves IAM allowed (PowerUserAccess excludes iam:*)."""
    reasons: list[str] = []
    for stmt in _as_list(_document(doc).get("Statement")):
        if not isinstance(stmt, dict) or stmt.get("Effect") != "Allow":
            continue
        if "*" not in [str(r) for r in _as_list(stmt.get("Resource"))]:
            continue
        if "NotAction" in stmt:
            excluded = _actions(stmt, "NotAction")
            if not _covers_iam(excluded) and not any(a.startswith("iam:") for a in excluded):
                reasons.append("allows everything but NotAction (IAM included) on *")
            continue
        actions = _actions(stmt, "Action")
        if "*" in actions or "*:*" in actions:
            reasons.append("allows *:* on *")
        elif "iam:*" in actions:
            reasons.append("allows iam:* on *")
    return reasons


def _touches_iam(doc: Any, effect: str) -> bool:
    """Whether a statement of `effect` in the document reaches IAM: `*`, `iam:*` or an iam: action, or a
    NotAction that leaves IAM in."""
    for stmt in _as_list(_document(doc).get("Statement")):
        if not isinstance(stmt, dict) or stmt.get("Effect") != effect:
            continue
        if "NotAction" in stmt:
            excluded = _actions(stmt, "NotAction")
            if not _covers_iam(excluded) and not any(a.startswith("iam:") for a in excluded):
                return True
            continue
        actions = _actions(stmt, "Action")
        if _covers_iam(actions) or any(a.startswith("iam:") for a in actions):
            return True
    return False


def denies_iam_admin(doc: Any) -> bool:
    """Whether a policy document (an SCP) denies IAM administration: a Deny of `*`, `iam:*` or any iam:
    action, or a Deny with NotAction that leaves IAM in (everything denied but a few services)."""
    return _touches_iam(doc, "Deny")


def allows_iam(doc: Any) -> bool:
    """Whether a policy document used as a filter (an SCP allow list, a permissions boundary) allows
    IAM at all: an Allow of `*`, `iam:*` or an iam: action, or an Allow with NotAction leaving IAM in."""
    return _touches_iam(doc, "Allow")


def policy_name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def is_privileged_policy(arn: str, extra: Iterable[str] = ()) -> bool:
    """A managed policy privileged by name: the built-in list or the source's `privileged_policies`."""
    name = policy_name_from_arn(arn)
    wanted = {p.strip() for p in extra if p and p.strip()}
    return name in PRIVILEGED_MANAGED or name in wanted or arn in wanted


def trusted_principals(doc: Any) -> list[str]:
    """Who a role's trust policy lets assume it: account/role ARNs, services, federated providers."""
    out: list[str] = []
    for stmt in _as_list(_document(doc).get("Statement")):
        if not isinstance(stmt, dict) or stmt.get("Effect") != "Allow":
            continue
        principal = stmt.get("Principal")
        if principal == "*":
            out.append("*")
            continue
        if isinstance(principal, dict):
            for kind in ("AWS", "Service", "Federated", "CanonicalUser"):
                for value in _as_list(principal.get(kind)):
                    label = f"{kind}:{value}" if kind != "AWS" else str(value)
                    if label not in out:
                        out.append(label)
    return out



def local_admin_policies(details: Mapping[str, list[dict[str, Any]]], *, iam_admin: bool = False) -> dict[str, list[str]]:
    """Customer-managed policies of an account that grant admin (with iam_admin: that can manage IAM),
    keyed "path+name" (as permission sets reference them)."""
    judge = iam_admin_statements if iam_admin else admin_statements
    out: dict[str, list[str]] = {}
    for pol in details.get("Policies", []):
        default = next((v for v in pol.get("PolicyVersionList", []) if v.get("IsDefaultVersion")), None)
        reasons = judge(default.get("Document")) if default else []
        if reasons:
            name = pol.get("PolicyName") or policy_name_from_arn(pol["Arn"])
            out[f"{pol.get('Path', '/')}{name}"] = reasons
    return out


def boundary_limits(boundary_arn: str, local: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether a permissions boundary keeps its holder from managing IAM. A boundary caps what the
    identity policies allow (https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_boundaries.html):
    a customer-managed boundary is read from its default version (`local`: the account's policies by ARN, as
    GetAccountAuthorizationDetails returns them); an AWS managed one limits unless it is itself an IAM admin."""
    pol = local.get(boundary_arn)
    if pol is not None:
        default = next((v for v in pol.get("PolicyVersionList", []) if v.get("IsDefaultVersion")), None)
        return not (default and iam_admin_statements(default.get("Document")))
    return policy_name_from_arn(boundary_arn) not in IAM_ADMIN_MANAGED

