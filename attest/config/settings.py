"""One Settings object, read from ATTEST_* environment variables and validated at start-up.

A `.env` file in the working directory is read in development only. Every value a user can get wrong
produces a SettingsError that names the variable, so the app refuses to start instead of failing later.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet

ENVIRONMENTS = ("development", "production", "test")


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")


def _int(name: str, raw: str, minimum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    return value


def _float(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _zone(name: str, raw: str) -> str:
    """An IANA time zone name (Europe/Berlin, America/New_York, UTC), checked against the zone database."""
    value = raw.strip() or "UTC"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SettingsError(
            f"{name} must be an IANA time zone name such as UTC, Europe/Berlin or America/New_York "
            f"(spelled as in the tz database, case included), not {raw!r}; if the name is right, the system "
            "lacks the time zone database: install the tzdata package"
        ) from None
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    secret_key: str = ""
    database_url: str = ""
    instance_path: str = "instance"
    base_url: str = "http://127.0.0.1:5000"
    encryption_keys: tuple[str, ...] = ()
    pending_key_file: str = ""  # development: a key just generated, written here by create_app if nothing needs another
    signing_key: str = ""  # Ed25519 private key, PEM or base64 raw 32 bytes (evidence bundles)
    log_level: str = "INFO"
    log_format: str = "json"  # json | text (ATTEST_LOG_FORMAT; text is the development default)
    proxy_count: int = 0  # reverse proxies in front of Attest whose X-Forwarded-* headers are trusted
    timezone: str = "UTC"  # the organisation's zone: "access on date X" means the end of day X there
    # sync
    sync_max_removal_ratio: float = 0.2
    sync_removal_guard_min: int = 10  # the guard ignores removals of fewer rows of a kind or part than this
    # a resync compares up to this many active grants of a source in memory (a set of keys, ~150 bytes
    # each), above it in the database (flat memory, about 1.7x the CPU of a resync): entitlements/sync/stage.py
    sync_keys_in_memory: int = 2_000_000
    alias_domains: tuple[tuple[str, str], ...] = ()  # (alias, canonical)
    # sessions and login
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    local_login: bool = True
    login_max_failures: int = 5
    login_lockout_minutes: int = 15  # the longest back-off after failed sign-ins (attest.auth.throttle)
    login_address_max_failures: int = 20  # failures from one address (any e-mail) before it is throttled
    login_account_max_failures: int = 50  # failures on one e-mail (any address) before it is throttled
    # OIDC single sign-on
    oidc_discovery_url: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scopes: str = "openid email profile"
    oidc_provider_name: str = "SSO"
    oidc_link_claim: str = "email"
    oidc_link_attribute: str = "email"  # the Identity field the link claim is compared with
    oidc_roles_claim: str = "groups"
    oidc_admin_groups: tuple[str, ...] = ()
    oidc_auditor_groups: tuple[str, ...] = ()
    # e-mail domains whose addresses the IdP vouches for even without `email_verified: true` (Entra ID)
    oidc_verified_domains: tuple[str, ...] = ()
    # mail
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_tls: str = "none"  # none | starttls | ssl
    smtp_username: str = ""
    smtp_password: str = ""
    mail_from: str = "attest@localhost"
    # remediation
    remediation_max_per_run: int = 100
    remediation_undo_days: int = 7
    # reviews: the campaign page warns before an escalation would hand one person more items than this
    escalation_warn_items: int = 200
    # reviews: closing a campaign with less than this share of its items decided (percent) needs a reason
    close_reason_below_percent: int = 100
    # audit checkpoints: a directory, or s3://bucket/prefix (Object Lock); "" = <instance>/audit-checkpoints
    audit_checkpoint_store: str = ""
    audit_checkpoint_retention_days: int = 2557  # S3 Object Lock retention of each checkpoint (7 years)
    audit_checkpoint_lock_mode: str = "COMPLIANCE"  # or GOVERNANCE
    # evidence bundles built by the scheduler are kept under <instance>/evidence/ this long, then removed
    evidence_retention_days: int = 7
    # GET /metrics answers only to `Authorization: Bearer <this>`; "" = /metrics is 404 (attest/operations.py)
    metrics_token: str = ""
    # the REST API's rate limit per token: a bucket of this many calls, refilled at this rate (attest/api/core.py)
    api_rate_burst: int = 120
    api_rate_per_second: float = 10.0
    # the encryption keys are checked by the commands that touch secrets, not when the app starts (the CLI:
    # `db upgrade` and the audit commands work while ATTEST_ENCRYPTION_KEYS is being put right)
    defer_key_check: bool = False

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_discovery_url and self.oidc_client_id)

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


def _persisted_dev_value(instance: Path, name: str, make) -> str:
    """Development only: a generated value kept under instance/ so restarts keep sessions and secrets."""
    instance.mkdir(parents=True, exist_ok=True)
    path = instance / name
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read and validate ATTEST_* variables. Raises SettingsError with a message naming the variable."""
    if environ is None:
        if os.environ.get("ATTEST_ENV", "development") == "development":
            try:
                from dotenv import load_dotenv

                load_dotenv(Path.cwd() / ".env", override=False)  # the working directory's .env
            except ImportError:  # pragma: no cover - python-dotenv is a dependency
                pass
        environ = dict(os.environ)
    env = environ.get

    app_env = env("ATTEST_ENV", "development").strip().lower()
    if app_env not in ENVIRONMENTS:
        raise SettingsError(f"ATTEST_ENV must be one of {', '.join(ENVIRONMENTS)}, not {app_env!r}")
    instance = Path(env("ATTEST_INSTANCE_PATH", "instance")).resolve()

    secret_key = env("ATTEST_SECRET_KEY", "")
    if not secret_key:
        if app_env == "production":
            raise SettingsError(
                "ATTEST_SECRET_KEY is required in production: set it to a long random value, "
                "e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        secret_key = (
            secrets.token_urlsafe(48)
            if app_env == "test"
            else _persisted_dev_value(instance, "secret_key", lambda: secrets.token_urlsafe(48))
        )
    elif app_env == "production" and len(secret_key) < 32:
        raise SettingsError("ATTEST_SECRET_KEY must be at least 32 characters in production")

    database_url = env("ATTEST_DATABASE_URL", "") or f"sqlite:///{instance / 'attest.db'}"
    if database_url.startswith("postgresql://") or database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
    if not (database_url.startswith("sqlite") or database_url.startswith("postgresql+psycopg")):
        raise SettingsError(
            "ATTEST_DATABASE_URL must be a sqlite:/// or postgresql:// URL, "
            f"not {database_url.split('://', 1)[0]}://..."
        )

    keys = _list(env("ATTEST_ENCRYPTION_KEYS", ""))
    pending_key_file = ""
    if not keys:
        if app_env == "production":
            raise SettingsError(
                "ATTEST_ENCRYPTION_KEYS is required in production: one or more Fernet keys, comma-separated, "
                "newest first (`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            )
        if app_env == "test":
            keys = (Fernet.generate_key().decode(),)
        elif (instance / "encryption_key").exists():
            keys = ((instance / "encryption_key").read_text().strip(),)
        else:
            # development, no key anywhere yet: create_app writes this key to the file only after seeing
            # that the database holds no secrets that need another one (attest/entitlements/keys.py)
            keys = (Fernet.generate_key().decode(),)
            pending_key_file = str(instance / "encryption_key")
    for i, key in enumerate(keys):
        try:
            Fernet(key.encode())
        except Exception:
            raise SettingsError(
                f"ATTEST_ENCRYPTION_KEYS entry {i + 1} is not a valid Fernet key (32 url-safe base64 bytes)"
            ) from None

    signing_key = env("ATTEST_SIGNING_KEY", "")
    if not signing_key and app_env != "production":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        def make_signing_key() -> str:
            raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            return base64.b64encode(raw).decode()

        signing_key = make_signing_key() if app_env == "test" else _persisted_dev_value(
            instance, "signing_key", make_signing_key
        )

    aliases: list[tuple[str, str]] = []
    for pair in _list(env("ATTEST_ALIAS_DOMAINS", "")):
        if "=" not in pair:
            raise SettingsError(
                f"ATTEST_ALIAS_DOMAINS entries look like alias.example=example.com, not {pair!r}"
            )
        alias, canonical = (p.strip().lower() for p in pair.split("=", 1))
        aliases.append((alias, canonical))

    log_format = env("ATTEST_LOG_FORMAT", "").strip().lower() or ("text" if app_env == "development" else "json")
    if log_format not in ("json", "text"):
        raise SettingsError(f"ATTEST_LOG_FORMAT must be json or text, not {log_format!r}")
    log_level = env("ATTEST_LOG_LEVEL", "INFO").strip().upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(f"ATTEST_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {log_level!r}")

    smtp_tls = env("ATTEST_SMTP_TLS", "none").lower()
    if smtp_tls not in ("none", "starttls", "ssl"):
        raise SettingsError(f"ATTEST_SMTP_TLS must be none, starttls or ssl, not {smtp_tls!r}")

    checkpoint_store = env("ATTEST_AUDIT_CHECKPOINT_STORE", "").strip() or str(instance / "audit-checkpoints")
    if checkpoint_store.startswith("s3://") and not checkpoint_store[5:].split("/", 1)[0]:
        raise SettingsError("ATTEST_AUDIT_CHECKPOINT_STORE must name a bucket: s3://BUCKET/PREFIX")
    if "://" in checkpoint_store and not checkpoint_store.startswith("s3://"):
        raise SettingsError("ATTEST_AUDIT_CHECKPOINT_STORE must be a directory or s3://BUCKET/PREFIX, not "
                            f"{checkpoint_store.split('://', 1)[0]}://...")
    lock_mode = env("ATTEST_AUDIT_CHECKPOINT_LOCK_MODE", "COMPLIANCE").strip().upper()
    if lock_mode not in ("COMPLIANCE", "GOVERNANCE"):
        raise SettingsError(f"ATTEST_AUDIT_CHECKPOINT_LOCK_MODE must be COMPLIANCE or GOVERNANCE, not {lock_mode!r}")

    metrics_token = env("ATTEST_METRICS_TOKEN", "").strip()
    if metrics_token and len(metrics_token) < 24:
        raise SettingsError("ATTEST_METRICS_TOKEN must be at least 24 characters (or unset: /metrics is then off), "
                            "e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")

    settings = Settings(
        env=app_env,
        secret_key=secret_key,
        database_url=database_url,
        instance_path=str(instance),
        base_url=env("ATTEST_BASE_URL", "http://127.0.0.1:5000").rstrip("/"),
        encryption_keys=keys,
        pending_key_file=pending_key_file,
        signing_key=signing_key,
        log_level=log_level,
        log_format=log_format,
        proxy_count=_int("ATTEST_PROXY_COUNT", env("ATTEST_PROXY_COUNT", "0"), 0),
        timezone=_zone("ATTEST_TIMEZONE", env("ATTEST_TIMEZONE", "UTC")),
        sync_max_removal_ratio=_float(
            "ATTEST_SYNC_MAX_REMOVAL_RATIO", env("ATTEST_SYNC_MAX_REMOVAL_RATIO", "0.2"), 0.0, 1.0
        ),
        sync_removal_guard_min=_int("ATTEST_SYNC_REMOVAL_GUARD_MIN", env("ATTEST_SYNC_REMOVAL_GUARD_MIN", "10"), 1),
        sync_keys_in_memory=_int("ATTEST_SYNC_KEYS_IN_MEMORY", env("ATTEST_SYNC_KEYS_IN_MEMORY", "2000000"), 0),
        alias_domains=tuple(aliases),
        session_idle_minutes=_int("ATTEST_SESSION_IDLE_MINUTES", env("ATTEST_SESSION_IDLE_MINUTES", "30"), 1),
        session_max_hours=_int("ATTEST_SESSION_MAX_HOURS", env("ATTEST_SESSION_MAX_HOURS", "12"), 1),
        local_login=_bool("ATTEST_LOCAL_LOGIN", env("ATTEST_LOCAL_LOGIN", "true")),
        login_max_failures=_int("ATTEST_LOGIN_MAX_FAILURES", env("ATTEST_LOGIN_MAX_FAILURES", "5"), 1),
        login_lockout_minutes=_int("ATTEST_LOGIN_LOCKOUT_MINUTES", env("ATTEST_LOGIN_LOCKOUT_MINUTES", "15"), 1),
        login_address_max_failures=_int("ATTEST_LOGIN_ADDRESS_MAX_FAILURES",
                                        env("ATTEST_LOGIN_ADDRESS_MAX_FAILURES", "20"), 1),
        login_account_max_failures=_int("ATTEST_LOGIN_ACCOUNT_MAX_FAILURES",
                                        env("ATTEST_LOGIN_ACCOUNT_MAX_FAILURES", "50"), 1),
        oidc_discovery_url=env("ATTEST_OIDC_DISCOVERY_URL", ""),
        oidc_client_id=env("ATTEST_OIDC_CLIENT_ID", ""),
        oidc_client_secret=env("ATTEST_OIDC_CLIENT_SECRET", ""),
        oidc_scopes=env("ATTEST_OIDC_SCOPES", "openid email profile"),
        oidc_provider_name=env("ATTEST_OIDC_PROVIDER_NAME", "SSO"),
        oidc_link_claim=env("ATTEST_OIDC_LINK_CLAIM", "email").strip(),
        oidc_link_attribute=env("ATTEST_OIDC_LINK_ATTRIBUTE", "email").strip().lower(),
        oidc_roles_claim=env("ATTEST_OIDC_ROLES_CLAIM", "groups").strip(),
        oidc_admin_groups=_list(env("ATTEST_OIDC_ADMIN_GROUPS", "")),
        oidc_auditor_groups=_list(env("ATTEST_OIDC_AUDITOR_GROUPS", "")),
        oidc_verified_domains=tuple(d.lower().lstrip("@") for d in _list(env("ATTEST_OIDC_VERIFIED_DOMAINS", ""))),
        smtp_host=env("ATTEST_SMTP_HOST", ""),
        smtp_port=_int("ATTEST_SMTP_PORT", env("ATTEST_SMTP_PORT", "25"), 1),
        smtp_tls=smtp_tls,
        smtp_username=env("ATTEST_SMTP_USERNAME", ""),
        smtp_password=env("ATTEST_SMTP_PASSWORD", ""),
        mail_from=env("ATTEST_MAIL_FROM", "attest@localhost"),
        remediation_max_per_run=_int(
            "ATTEST_REMEDIATION_MAX_PER_RUN", env("ATTEST_REMEDIATION_MAX_PER_RUN", "100"), 1
        ),
        remediation_undo_days=_int("ATTEST_REMEDIATION_UNDO_DAYS", env("ATTEST_REMEDIATION_UNDO_DAYS", "7"), 0),
        escalation_warn_items=_int("ATTEST_ESCALATION_WARN_ITEMS", env("ATTEST_ESCALATION_WARN_ITEMS", "200"), 1),
        close_reason_below_percent=min(100, _int("ATTEST_CLOSE_REASON_BELOW_PERCENT",
                                                 env("ATTEST_CLOSE_REASON_BELOW_PERCENT", "100"), 0)),
        audit_checkpoint_store=checkpoint_store,
        audit_checkpoint_retention_days=_int("ATTEST_AUDIT_CHECKPOINT_RETENTION_DAYS",
                                             env("ATTEST_AUDIT_CHECKPOINT_RETENTION_DAYS", "2557"), 1),
        audit_checkpoint_lock_mode=lock_mode,
        evidence_retention_days=_int("ATTEST_EVIDENCE_RETENTION_DAYS", env("ATTEST_EVIDENCE_RETENTION_DAYS", "7"), 1),
        metrics_token=metrics_token,
        api_rate_burst=_int("ATTEST_API_RATE_BURST", env("ATTEST_API_RATE_BURST", "120"), 1),
        api_rate_per_second=_float("ATTEST_API_RATE_PER_SECOND", env("ATTEST_API_RATE_PER_SECOND", "10"), 0.01, 100000.0),
    )
    if settings.oidc_discovery_url and not settings.oidc_client_id:
        raise SettingsError("ATTEST_OIDC_CLIENT_ID is required when ATTEST_OIDC_DISCOVERY_URL is set")
    if settings.is_production and settings.oidc_discovery_url.startswith("http://"):
        raise SettingsError("ATTEST_OIDC_DISCOVERY_URL must use https in production")
    _check_oidc(settings)
    return settings.replace(**overrides) if overrides else settings


OIDC_LINK_ATTRIBUTES = ("email", "login", "employee_id", "external_id")


def _check_oidc(settings: Settings) -> None:
    """OIDC values a person can get wrong; http is accepted only for a loopback IdP outside production."""
    from urllib.parse import urlsplit

    if not settings.oidc_discovery_url:
        return
    parts = urlsplit(settings.oidc_discovery_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            "ATTEST_OIDC_DISCOVERY_URL must be an https URL such as "
            "https://example.okta.com/.well-known/openid-configuration"
        )
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SettingsError(
            "ATTEST_OIDC_DISCOVERY_URL must use https (plain http is accepted only for a loopback test IdP)"
        )
    if "openid" not in settings.oidc_scopes.split():
        raise SettingsError(f"ATTEST_OIDC_SCOPES must include openid, not {settings.oidc_scopes!r}")
    if not settings.oidc_link_claim:
        raise SettingsError("ATTEST_OIDC_LINK_CLAIM must name a claim, e.g. email")
    if settings.oidc_link_attribute not in OIDC_LINK_ATTRIBUTES:
        raise SettingsError(
            f"ATTEST_OIDC_LINK_ATTRIBUTE must be one of {', '.join(OIDC_LINK_ATTRIBUTES)}, "
            f"not {settings.oidc_link_attribute!r}"
        )
    if not settings.oidc_roles_claim:
        raise SettingsError("ATTEST_OIDC_ROLES_CLAIM must name a claim, e.g. groups")
