"""OIDC single sign-on through Authlib's Flask client, for any standards-compliant IdP.

The flow is the authorization code flow with PKCE (S256), a `state` bound to the browser's session and
a `nonce` bound to the ID token. The ID token's signature is checked against the IdP's published keys
(JWKS, fetched again when an unknown key id appears, so key rotation just works), and its issuer,
audience and expiry are validated; anything off refuses the sign-in with a page that says what failed,
and the failure is audited as `login.failed`.

A verified sign-in then:
- finds the Attest user by the IdP subject (or adopts the user with the same verified e-mail once);
  an e-mail counts as verified only when the ID token says `email_verified: true` or its domain is one
  of ATTEST_OIDC_VERIFIED_DOMAINS (for IdPs such as Entra ID that send no such claim). An unverified
  e-mail is never matched to anything: it neither adopts a user nor links a person, and it creates no
  user (it signs in only a user already bound to the same subject, whose e-mail it does not change);
- never signs in a break-glass local account (a user with a password, `attest users create-admin`),
  found by subject or by e-mail: those sign in with their password only, so an IdP account that claims
  the same address cannot take them over;
- links the user to a person (Identity) by the verified e-mail, or by the claim named in
  ATTEST_OIDC_LINK_CLAIM compared with the Identity field ATTEST_OIDC_LINK_ATTRIBUTE;
- refreshes `User.idp_roles` from the claim ATTEST_OIDC_ROLES_CLAIM (a list, or a space/comma
  separated string; a dotted path such as `realm_access.roles` reaches nested claims) mapped through
  ATTEST_OIDC_ADMIN_GROUPS and ATTEST_OIDC_AUDITOR_GROUPS; a change is audited `user.roles`.
A person with no linked identity and no admin/auditor role gets a clear page and no session: nothing
can be routed to them. Admins and auditors may sign in without a directory record (external auditors).

Why one module of some 560 lines: it is one flow, read top to bottom in the order a sign-in takes it (the
client and the IdP's metadata, the redirect, the callback's checks of the ID token, the claims turned into a
profile, the profile turned into a user and a session, the failures audited), and the rules above are its
security contract: kept in one file, a reviewer of a change to sign-in sees every check the change touches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attest.auth.models import ROLES, User
from attest.config import Settings
from attest.db import utcnow
from attest.entitlements.models import Identity, PersonStatus
from attest.entitlements.queries import person_by_email
from attest.trail.chain import record as audit
from attest.trail.chain import record_many as audit_many

log = logging.getLogger("attest.auth.oidc")

CLIENT_NAME = "idp"
EXTENSION = "attest_oidc"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# the ID token must be valid now, give or take this much clock skew between Attest and the IdP
CLOCK_SKEW_SECONDS = 60


class SsoError(Exception):
    """A refused single sign-on. `message` is shown to the person, `reason` goes to the audit trail."""

    def __init__(self, message: str, reason: str, status: int = 401, actor: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status
        self.actor = actor


class NoIdentityError(SsoError):
    """Signed in at the IdP, but Attest knows no person to route reviews to."""


@dataclass(frozen=True)
class SsoProfile:
    """What Attest takes from a verified ID token (plus userinfo)."""

    subject: str
    email: str
    name: str
    link_value: str | None
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    claims: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # the IdP vouches for the e-mail: `email_verified: true`, or a domain in ATTEST_OIDC_VERIFIED_DOMAINS
    email_verified: bool = False


@dataclass
class SignInOutcome:
    user: User | None  # None: refused before any user was found or made
    refused: SsoError | None = None


# --- the Authlib client ----------------------------------------------------------------------------


def init_app(app: Flask, settings: Settings) -> None:
    """Register the IdP with Authlib's Flask client when ATTEST_OIDC_DISCOVERY_URL and _CLIENT_ID are set."""
    if not settings.oidc_enabled:
        return
    from authlib.integrations.flask_client import OAuth

    oauth = OAuth(app)
    client_kwargs: dict[str, Any] = {
        "scope": settings.oidc_scopes,
        "code_challenge_method": "S256",
        "default_timeout": 10,
    }
    if not settings.oidc_client_secret:  # a public client: PKCE alone protects the code
        client_kwargs["token_endpoint_auth_method"] = "none"
    client = oauth.register(
        CLIENT_NAME,
        client_cls=_keep_alive_app(),
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret or None,
        server_metadata_url=settings.oidc_discovery_url,
        client_kwargs=client_kwargs,
    )
    app.extensions[EXTENSION] = client


def _keep_alive_app() -> type:
    """Authlib's Flask client with one pool of keep-alive connections to the IdP (per worker process).

    Authlib opens a new requests session, so a new connection, for every back-channel call (token,
    userinfo, discovery, JWKS) and closes it after. Against an IdP over https that is a TCP and TLS
    handshake, and the CA bundle loaded again, twice per sign-in: ~24 ms of CPU per call measured here
    (in-process https server, requests 2.34), under the worker's GIL, while 50 reviewers sign in at once.
    Each of Authlib's sessions now sends through one shared connection pool instead; requests, urllib3 and
    Authlib check certificates, state, PKCE and tokens exactly as before. A connection the IdP closed is
    noticed by urllib3 before reuse. The pool is made again in a forked process (never share sockets)."""
    import os

    from authlib.integrations.flask_client.apps import FlaskOAuth2App
    from authlib.integrations.requests_client import OAuth2Session
    from requests.adapters import HTTPAdapter

    class KeepAlive(HTTPAdapter):
        def close(self) -> None:  # Authlib closes its session after each call: the pool outlives it
            pass

    pools: dict[int, HTTPAdapter] = {}

    class PooledSession(OAuth2Session):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pool = pools.get(os.getpid())
            if pool is None:
                pools.clear()
                pool = pools[os.getpid()] = KeepAlive()
            for prefix in ("https://", "http://"):
                self.adapters.pop(prefix).close()  # the session's own, unused
                self.mount(prefix, pool)

    class IdpApp(FlaskOAuth2App):
        client_cls = PooledSession

    return IdpApp


def client() -> Any | None:
    return current_app.extensions.get(EXTENSION)


def redirect_uri(settings: Settings) -> str:
    """What to register at the IdP: `<ATTEST_BASE_URL>/login/oidc/callback`."""
    return settings.base_url.rstrip("/") + "/login/oidc/callback"


def _url_ok(url: Any, settings: Settings) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in LOOPBACK and not settings.is_production


def metadata(oidc_client: Any, settings: Settings) -> dict[str, Any]:
    """The IdP's discovery document, loaded once and checked: endpoints over https, no unsigned tokens."""
    import requests

    provider = settings.oidc_provider_name
    try:
        meta = oidc_client.load_server_metadata()
    except (requests.RequestException, ValueError) as exc:
        log.warning("OIDC discovery failed for %s: %s", settings.oidc_discovery_url, type(exc).__name__)
        raise SsoError(
            f"Attest could not reach {provider} to start single sign-on. Try again in a minute; if it keeps "
            "failing, tell your Attest administrator (the discovery URL may be wrong).",
            reason=f"discovery failed: {type(exc).__name__}", status=502,
        ) from None
    if not meta.get("_attest_checked"):
        problems = [name for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
                    if not _url_ok(meta.get(name), settings)]
        if problems:
            oidc_client.server_metadata.pop("_loaded_at", None)  # look again next time
            log.error("OIDC discovery document at %s is unusable: %s missing or not https",
                      settings.oidc_discovery_url, ", ".join(problems))
            raise SsoError(
                f"{provider}'s single sign-on configuration is not usable ({', '.join(problems)} missing or not "
                "https). Tell your Attest administrator.",
                reason="discovery document unusable: " + ", ".join(problems), status=502,
            )
        algs = [a for a in meta.get("id_token_signing_alg_values_supported") or ["RS256"]
                if isinstance(a, str) and a.lower() != "none"]
        meta["id_token_signing_alg_values_supported"] = algs or ["RS256"]
        meta["_attest_checked"] = True
    return meta


def authorize_redirect(settings: Settings):
    """The redirect to the IdP's authorization endpoint (state, nonce and PKCE kept in the session)."""
    oidc_client = client()
    metadata(oidc_client, settings)
    return oidc_client.authorize_redirect(redirect_uri(settings))


def _claims_options(meta: dict[str, Any], settings: Settings) -> dict[str, Any]:
    return {
        "iss": {"essential": True, "values": [meta["issuer"]]},
        "aud": {"essential": True, "values": [settings.oidc_client_id]},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }


def verify_callback(settings: Settings) -> dict[str, Any]:
    """Exchange the code and verify the ID token. Returns its claims (with userinfo merged in when the
    ID token lacks the e-mail, link or roles claim). Raises SsoError saying what failed."""
    import requests
    from authlib.common.errors import AuthlibBaseError
    from authlib.integrations.base_client.errors import MismatchingStateError
    from joserfc.errors import (
        BadSignatureError,
        ExpiredTokenError,
        InvalidClaimError,
        InvalidKeyIdError,
        JoseError,
        MissingClaimError,
    )

    provider = settings.oidc_provider_name
    oidc_client = client()
    error = request.args.get("error")
    if error:
        description = (request.args.get("error_description") or "")[:300]
        raise SsoError(
            f"{provider} did not sign you in ({error}{': ' + description if description else ''}).",
            reason=f"idp error: {error}"[:200], status=401,
        )
    if not request.args.get("code") or not request.args.get("state"):
        raise SsoError("This sign-in answer is incomplete (no code or state). Start again from the sign-in page.",
                       reason="callback without code or state", status=400)
    meta = metadata(oidc_client, settings)
    unverified = (f"{provider}'s answer could not be verified", "Nothing was signed in. Start again from the "
                  "sign-in page; if it keeps failing, tell your Attest administrator.")
    try:
        token = oidc_client.authorize_access_token(claims_options=_claims_options(meta, settings),
                                                   leeway=CLOCK_SKEW_SECONDS)
    except MismatchingStateError:
        raise SsoError(
            "This sign-in was not started in this browser, or it was already used (the state check failed). "
            "Nothing was signed in. Start again from the sign-in page.",
            reason="state mismatch", status=400,
        ) from None
    except ExpiredTokenError:
        raise SsoError(f"{unverified[0]}: the ID token has expired. {unverified[1]}",
                       reason="id token expired") from None
    except (BadSignatureError, InvalidKeyIdError) as exc:
        raise SsoError(f"{unverified[0]}: the ID token's signature does not match {provider}'s published keys. "
                       f"{unverified[1]}", reason=f"id token signature invalid ({exc.error})") from None
    except (InvalidClaimError, MissingClaimError) as exc:
        what = {"nonce": "it was not issued for this sign-in (nonce check failed)",
                "iss": "it was issued by someone else (issuer check failed)",
                "aud": "it was issued for another application (audience check failed)",
                "azp": "it was issued for another application (azp check failed)",
                "iat": "its issue time is wrong (check the server clocks)",
                "nbf": "it is not valid yet (check the server clocks)"}.get(exc.claim, f"its {exc.claim} claim is wrong")
        missing = isinstance(exc, MissingClaimError)
        raise SsoError(f"{unverified[0]}: " + (f"the ID token has no {exc.claim} claim" if missing else what)
                       + f". {unverified[1]}", reason=f"id token claim {'missing' if missing else 'invalid'}: "
                       f"{exc.claim}") from None
    except JoseError as exc:
        raise SsoError(f"{unverified[0]}: the ID token could not be read ({exc.error}). {unverified[1]}",
                       reason=f"id token unreadable ({exc.error})") from None
    except AuthlibBaseError as exc:
        raise SsoError(f"{provider} refused to complete the sign-in ({exc.error}). Start again from the sign-in page.",
                       reason=f"token exchange failed: {exc.error}"[:200]) from None
    except requests.RequestException as exc:
        log.warning("OIDC token exchange failed: %s", type(exc).__name__)
        raise SsoError(f"Attest could not reach {provider} to complete the sign-in. Try again in a minute.",
                       reason=f"idp unreachable: {type(exc).__name__}", status=502) from None
    claims = token.get("userinfo")
    if not claims:
        raise SsoError(f"{unverified[0]}: it contained no ID token. {unverified[1]}", reason="no id token")
    claims = dict(claims)
    wanted = ("email", settings.oidc_link_claim, settings.oidc_roles_claim.split(".")[0])
    if meta.get("userinfo_endpoint") and any(c not in claims for c in wanted):
        claims = _merge_userinfo(oidc_client, token, claims, settings)
    return claims


def _merge_userinfo(oidc_client: Any, token: dict[str, Any], claims: dict[str, Any],
                    settings: Settings) -> dict[str, Any]:
    import requests
    from authlib.common.errors import AuthlibBaseError

    try:
        info = dict(oidc_client.userinfo(token=token))
    except (requests.RequestException, AuthlibBaseError, ValueError) as exc:
        log.warning("OIDC userinfo request failed: %s", type(exc).__name__)
        return claims
    if info.get("sub") != claims.get("sub"):  # OIDC core 5.3.2: must match, or the answer is not for this user
        raise SsoError(f"{settings.oidc_provider_name}'s user information belongs to someone else. Nothing was "
                       "signed in.", reason="userinfo subject mismatch")
    return {**info, **claims}  # the signed ID token wins


# --- pure claim handling ---------------------------------------------------------------------------


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by name, or by dotted path into nested objects (`realm_access.roles`)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _as_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.replace(",", " ").split() if v)
    if isinstance(value, list | tuple | set):
        return tuple(str(v) for v in value if v is not None and str(v))
    return (str(value),)


def map_roles(settings: Settings, groups: tuple[str, ...]) -> tuple[str, ...]:
    """IdP groups -> Attest roles. Group names compare case-insensitively (IdPs differ in case)."""
    have = {g.lower() for g in groups}
    roles = set()
    if have & {g.lower() for g in settings.oidc_admin_groups}:
        roles.add("admin")
    if have & {g.lower() for g in settings.oidc_auditor_groups}:
        roles.add("auditor")
    return tuple(r for r in ROLES if r in roles)


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def email_verified(settings: Settings, claims: dict[str, Any], email: str) -> bool:
    """Does the IdP vouch for this address? Only `email_verified: true`, or a configured domain."""
    return _is_true(claims.get("email_verified")) or email.rsplit("@", 1)[-1] in settings.oidc_verified_domains


def profile_from_claims(settings: Settings, claims: dict[str, Any]) -> SsoProfile:
    """Validate the verified claims Attest relies on. Raises SsoError (403) for an unusable identity."""
    provider = settings.oidc_provider_name
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise SsoError(f"{provider} sent no subject for you. Nothing was signed in.", reason="no sub claim")
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        # Entra ID sends the e-mail only as an optional claim; its preferred_username is the UPN
        email = next((v for v in (claims.get("preferred_username"), claims.get("upn"))
                      if isinstance(v, str) and "@" in v), None)
    if not email:
        raise SsoError(f"{provider} sent no e-mail address for you, so Attest cannot tell who you are. Ask your "
                       "administrator to release the email claim (scope `email`) to Attest.",
                       reason="no email claim", status=403)
    email = email.strip().lower()
    if "email_verified" in claims and _is_false(claims.get("email_verified")):
        raise SsoError(f"Your e-mail address {email} is not verified at {provider}. Verify it there, then sign in "
                       "again.", reason="email not verified", status=403, actor=email)
    verified = email_verified(settings, claims, email)
    link_raw = claim(claims, settings.oidc_link_claim)
    link_value = str(link_raw).strip() if isinstance(link_raw, str | int) and str(link_raw).strip() else None
    if settings.oidc_link_claim == "email":
        link_value = email if verified else None  # an unverified e-mail links no person
    roles_raw = claim(claims, settings.oidc_roles_claim)
    if roles_raw is None and settings.oidc_roles_claim in (claims.get("_claim_names") or {}):
        log.warning("the IdP left the %s claim out of the token (too many groups: Entra ID 'groups overage'); "
                    "assign groups to the application or emit only those groups", settings.oidc_roles_claim)
    groups = _as_list(roles_raw)
    name = next((v for v in (claims.get("name"), " ".join(filter(None, (claims.get("given_name"),
                                                                        claims.get("family_name")))))
                 if isinstance(v, str) and v.strip()), "")
    return SsoProfile(subject=subject, email=email, name=name.strip()[:255], link_value=link_value,
                      groups=groups, roles=map_roles(settings, groups), claims=claims, email_verified=verified)


# --- the sign-in service ---------------------------------------------------------------------------


def find_identity(session: Session, settings: Settings, value: str | None) -> Identity | None:
    """The active person whose ATTEST_OIDC_LINK_ATTRIBUTE equals the link claim's value."""
    if not value:
        return None
    attribute = settings.oidc_link_attribute
    if attribute == "email":
        return person_by_email(session, value, humans_only=True)
    if attribute == "login":
        condition = func.lower(Identity.login) == value.strip().lower()
    elif attribute == "employee_id":
        condition = Identity.employee_id == value.strip()
    else:
        condition = Identity.external_id == value.strip()
    return session.scalar(
        select(Identity).where(condition, Identity.ended_at.is_(None), Identity.kind == "human")
        .order_by(Identity.id).limit(1)
    )


def complete_sign_in(session: Session, settings: Settings, profile: SsoProfile) -> SignInOutcome:
    """Find or create the user, refresh roles and the identity link, and decide. Never commits.

    A refusal after the user is known (no identity, deactivated, terminated) still keeps the user row
    (so an administrator sees who tried and can link them) and audits `login.failed`.

    The sign-in's audit events are written together, last (`_Events.write`): the audit chain's head is a
    row lock every audited write waits for, so it is taken only once the user's changes are flushed and
    held only for the events' INSERT and the head's UPDATE until the caller commits. With the events
    written one by one, a first sign-in held the head across its identity lookup and flushes, and every
    sign-in across the flush of its own user row; 50 reviewers signing in at once queue on the head.
    """
    provider = settings.oidc_provider_name
    now = utcnow()
    events = _Events()
    user = session.scalar(select(User).where(User.oidc_subject == profile.subject))
    if user is None and not profile.email_verified:
        error = SsoError(
            f"{provider} does not say that your e-mail address {profile.email} is verified, so Attest cannot tell "
            "which account is yours. Verify the address at your identity provider (or ask your Attest "
            "administrator to list your e-mail domain as verified), then sign in again.",
            reason="email not verified", status=403, actor=profile.email)
        _audit_failure(session, error, None)
        return SignInOutcome(None, error)
    if user is None:
        user = session.scalar(select(User).where(func.lower(User.email) == profile.email))
    if user is not None and user.password_hash:
        # a break-glass local account: its password is its only way in (never linked, never SSO)
        error = SsoError(
            f"{profile.email} is a break-glass local account in Attest: it signs in with its password only, "
            f"never through {provider}. Use your own {provider} account, or ask an Attest administrator.",
            reason="break-glass account", status=403, actor=profile.email)
        _audit_failure(session, error, user)
        return SignInOutcome(user, error)
    if user is not None and user.oidc_subject and user.oidc_subject != profile.subject:
        # the IdP gave this e-mail to a different account (a re-used address): never merge silently
        error = SsoError(
            f"The e-mail {profile.email} already belongs to another {provider} account in Attest. An Attest "
            "administrator must resolve this before you can sign in.",
            reason="e-mail belongs to another subject", status=403, actor=profile.email)
        _audit_failure(session, error, user)
        return SignInOutcome(user, error)
    created = user is None
    if user is None:
        user = User(email=profile.email, display_name=profile.name or profile.email.split("@")[0],
                    local_roles=[], idp_roles=[],
                    oidc_subject=profile.subject)
        session.add(user)
        session.flush()
        events.add(actor=profile.email, action="user.create", object_type="user", object_id=str(user.id),
                   after={"email": profile.email, "method": "oidc", "subject": profile.subject})
    else:
        if user.oidc_subject is None:
            user.oidc_subject = profile.subject
            events.add(actor=profile.email, action="user.link_sso", object_type="user", object_id=str(user.id),
                       after={"subject": profile.subject})
        if profile.email_verified and user.email != profile.email and not session.scalar(
                select(User.id).where(func.lower(User.email) == profile.email, User.id != user.id)):
            events.add(actor=profile.email, action="user.email", object_type="user", object_id=str(user.id),
                       before={"email": user.email}, after={"email": profile.email})
            user.email = profile.email
        if profile.name:
            user.display_name = profile.name

    before_roles = sorted(user.idp_roles or [])
    after_roles = sorted(profile.roles)
    if before_roles != after_roles:
        user.idp_roles = after_roles
        events.add(actor=f"idp:{provider}", action="user.roles", object_type="user", object_id=str(user.id),
                   before={"idp_roles": before_roles},
                   after={"idp_roles": after_roles, "groups": list(profile.groups)})

    identity = session.get(Identity, user.identity_id) if user.identity_id else None
    if identity is None or identity.ended_at is not None:
        found = find_identity(session, settings, profile.link_value)
        if found is not None and found.id != user.identity_id:
            events.add(actor=f"idp:{provider}", action="user.link", object_type="user", object_id=str(user.id),
                       before={"identity_id": user.identity_id},
                       after={"identity_id": found.id, "by": settings.oidc_link_claim, "value": profile.link_value})
            user.identity_id = found.id
        identity = found
    if not profile.name and identity is not None and identity.display_name:
        user.display_name = identity.display_name  # the IdP sent no name: the directory's

    refusal: SsoError | None = None
    if not user.active:
        refusal = SsoError("Your Attest account is deactivated. Ask an Attest administrator if this is a mistake.",
                           reason="deactivated", status=403, actor=profile.email)
    elif identity is not None and identity.status == PersonStatus.TERMINATED:
        refusal = SsoError("The directory records your employment as ended, so Attest does not sign you in.",
                           reason="identity terminated", status=403, actor=profile.email)
    elif identity is None and not user.roles:
        refusal = NoIdentityError(
            f"You signed in at {provider} as {profile.email}, but Attest has no person with this "
            f"{'e-mail' if settings.oidc_link_attribute == 'email' else settings.oidc_link_attribute} in the "
            "directory, so no reviews can be routed to you.",
            reason="no matching identity", status=403, actor=profile.email)
    if refusal is not None:
        events.add(**_failure_event(refusal, user))
        events.write(session)
        return SignInOutcome(user, refusal)

    user.last_login_at = now
    events.add(actor=profile.email, action="login.success", object_type="user", object_id=str(user.id),
               after={"method": "oidc", "subject": profile.subject, "identity_id": user.identity_id,
                      "roles": sorted(user.roles), "new_user": created})
    events.write(session)
    return SignInOutcome(user)


class _Events:
    """A sign-in's audit events, kept in order and written together by `write` (see complete_sign_in)."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []

    def add(self, **event: Any) -> None:
        self.pending.append(event)

    def write(self, session: Session) -> None:
        session.flush()  # the user's own changes first, outside the chain's lock
        audit_many(session, self.pending)
        self.pending = []


def _failure_event(error: SsoError, user: User | None = None) -> dict[str, Any]:
    return {"actor": error.actor or "anonymous", "action": "login.failed", "object_type": "user",
            "object_id": str(user.id) if user is not None and user.id else None,
            "after": {"method": "oidc", "reason": error.reason}}


def _audit_failure(session: Session, error: SsoError, user: User | None = None) -> None:
    audit(session, **_failure_event(error, user))


def audit_failure(session: Session, error: SsoError) -> None:
    """A refusal before any user is known (bad state, bad token, IdP error)."""
    _audit_failure(session, error)
