"""The evidence bundle of a campaign: a signed zip an auditor can check offline.

Contents (see docs/evidence.md):
- `items.csv`, `items.xlsx`: one row per review item (XlsxWriter constant-memory mode; a new sheet past
  Excel's 1,048,576 rows), streamed from the database (server-side cursor on PostgreSQL): memory stays
  flat whatever the campaign's size.
- `exclusions.csv`: each grant in scope at launch that got no item, with the reason.
- `remediations.csv`: every remediation with what was done (the note of a manual task marked done, by whom,
  when) and the sync run that proved it. Every CSV goes through `attest.exports` (formula neutralisation).
- `report.pdf`: summary, completion over time, decisions by reviewer with rubber-stamp indicators,
  revocations and their verification, exceptions (WeasyPrint, `templates/evidence/report.html`).
- `audit.jsonl`: the campaign's audit events in chain order, each with its seq, prev_hash and hash.
- `signing_key.pub.pem`: the public half of the signing key; `SHA256SUMS`: for `sha256sum -c`.
- `manifest.json`: campaign, definition as launched, controls, dates, reviewers, sync runs used,
  population reconciliation, totals, the audit chain head at export, the SHA-256 and size of every
  other file, and an Ed25519 signature over the canonical manifest.

The signed message is the manifest without its `signature` member, as canonical JSON (UTF-8, keys
sorted, no whitespace). `manifest.json` is written as exactly those bytes with the signature member
appended last, so removing `,"signature":{...}` from the end gives the signed bytes back (docs show how
with sed + openssl); `verify_bundle` re-canonicalises the parsed manifest instead.

The package, one module per idea (what the rest of Attest, the tests and bench/ import is re-exported here):

- `bundle`: export_bundle, the manifest it fills and the checkpoints it carries
- `writers`: items.csv, items.xlsx, exclusions.csv, remediations.csv and audit.jsonl, streamed
- `members`: zip members hashed as they are written
- `report`: the campaign's figures (manifest and report) and the report PDF (the bundle uses
  them; the report's HTML is re-exported for tests)
- `signing`: the signing key and the signed manifest bytes (a public key's names: attest/signing.py)
- `verify`: verify_bundle / check_bundle, offline, against a pinned key
- `partials`: what a killed export left behind, and removing it
"""

from __future__ import annotations

from attest.audit.evidence.bundle import export_bundle
from attest.audit.evidence.partials import _host, _partial_prefix, remove_partials
from attest.audit.evidence.report import render_report_html
from attest.audit.evidence.signing import EvidenceError, _signed_manifest, load_signing_key
from attest.audit.evidence.verify import NO_TRUSTED_KEY, check_bundle, verify_bundle
from attest.audit.evidence.writers import ITEM_COLUMNS, PHASES, items_query
from attest.signing import key_fingerprint, key_id, load_public_key, public_key_pem, public_key_raw

__all__ = [
    "ITEM_COLUMNS", "NO_TRUSTED_KEY", "PHASES", "EvidenceError", "_host", "_partial_prefix",
    "_signed_manifest", "check_bundle", "export_bundle", "items_query", "key_fingerprint", "key_id",
    "load_public_key", "load_signing_key", "public_key_pem", "public_key_raw", "remove_partials",
    "render_report_html", "verify_bundle",
]
