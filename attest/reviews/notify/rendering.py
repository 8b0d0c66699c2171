"""Rendering review e-mail: `mail/<template>.html` and `.txt` into one Mail, the MIME message built from
it, and the links and dates the templates show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from attest.config import Settings
from attest.db import utcnow
from attest.reviews.models import Campaign
from attest.templating import fmt_date, fmt_dt

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"


@dataclass(frozen=True)
class Mail:
    to: str
    to_name: str
    subject: str
    text: str
    html: str
    message_id: str | None = None  # stable per notice: a mail resent after a crash is the same message


_env: Environment | None = None


def _jinja() -> Environment:
    global _env
    if _env is None:

        env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(dt=fmt_dt, date=fmt_date)
        _env = env
    return _env


def render_mail(template: str, to: str, to_name: str, subject: str, **context: Any) -> Mail:
    """Render `mail/<template>.html` and `mail/<template>.txt` into one message."""
    env = _jinja()
    context = {"subject": subject, "to_name": to_name, **context}
    return Mail(
        to=to, to_name=to_name, subject=subject,
        text=env.get_template(f"mail/{template}.txt").render(**context).strip() + "\n",
        html=env.get_template(f"mail/{template}.html").render(**context),
    )


def build_message(mail: Mail, settings: Settings) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = mail.subject
    msg["From"] = settings.mail_from
    msg["To"] = formataddr((mail.to_name, mail.to)) if mail.to_name else mail.to
    msg["Date"] = format_datetime(utcnow())
    domain = settings.mail_from.rsplit("@", 1)[-1].strip("> ") or "attest.local"
    msg["Message-ID"] = f"<{mail.message_id}@{domain}>" if mail.message_id else make_msgid(domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    return msg


def inbox_url(settings: Settings, campaign_id: int) -> str:
    return f"{settings.base_url}/reviews?campaign={campaign_id}"


def campaign_url(settings: Settings, campaign_id: int) -> str:
    return f"{settings.base_url}/campaigns/{campaign_id}"


def _date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value else "—"


def _campaign_ctx(c: Campaign) -> dict[str, Any]:
    spec = c.spec or {}
    return {"id": c.id, "name": c.name, "description": spec.get("description"), "due_at": c.due_at,
            "launched_at": c.launched_at, "closed_at": c.closed_at, "controls": spec.get("controls") or []}
