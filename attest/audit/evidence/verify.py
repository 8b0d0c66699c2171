"""Verifying a bundle offline: every file's hash and size against the manifest, the signature against a
pinned key (never the key inside the bundle), safe entry names, the checkpoints, the audit events' chain,
and that nobody decided about their own access.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attest.audit.checkpoints import parse_checkpoint
from attest.audit.evidence.bundle import CHECKPOINT_PREFIX
from attest.db import canonical_json
from attest.signing import key_fingerprint, key_id, public_key_raw
from attest.trail.chain import GENESIS, event_hash


@dataclass
class Verification:
    problems: list[str]
    key_id: str | None = None
    campaign: str | None = None
    files: int = 0
    events: int = 0
    checkpoints: int = 0
    notes: list[str] = field(default_factory=list)


NO_TRUSTED_KEY = ("no trusted key to check the signature against: pass --key FILE (the instance's public key, from "
                  "`attest evidence public-key` or /evidence/public-key) or --fingerprint HEX; the key inside a bundle "
                  "is never trusted")


def verify_bundle(path: str | os.PathLike, trusted_key: Ed25519PublicKey | None = None, *,
                  fingerprint: str | None = None) -> list[str]:
    """Check a bundle offline: file hashes, the signature, the audit events. [] when everything holds."""
    return check_bundle(path, trusted_key, fingerprint=fingerprint).problems


def check_bundle(path: str | os.PathLike, trusted_key: Ed25519PublicKey | None = None, *,
                 fingerprint: str | None = None) -> Verification:
    """Check a bundle against a pinned key: `trusted_key`, or the key whose fingerprint is `fingerprint` (its
    16-hex key id or its 64-hex SHA-256). With neither, the bundle fails: the public key a bundle carries
    proves nothing, anyone can re-sign a changed bundle with a key of their own."""
    problems: list[str] = []
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        return Verification([f"{path}: not a readable zip file ({exc})"])
    with zf:
        names = zf.namelist()
        problems.extend(_entry_name_problems(names))
        if "manifest.json" not in names:
            return Verification(problems + ["manifest.json is missing"])
        try:
            raw = zf.read("manifest.json")
            manifest = json.loads(raw)
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as exc:
            return Verification(problems + [f"manifest.json cannot be read ({exc}): it was altered"])
        result = Verification(problems, campaign=str((manifest.get("campaign") or {}).get("name")))
        sig = manifest.pop("signature", None)
        body = canonical_json(manifest).encode()
        pinned = _check_signature(sig, body, trusted_key, fingerprint, result)
        files = manifest.get("files") or {}
        if not isinstance(files, dict):
            problems.append("manifest.json: `files` is not an object")
            files = {}
        for name, entry in sorted(files.items()):
            if name not in names:
                problems.append(f"{name}: listed in the manifest but missing from the bundle")
                continue
            sha, size = hashlib.sha256(), 0
            try:
                with zf.open(name) as fh:
                    while chunk := fh.read(1 << 20):
                        sha.update(chunk)
                        size += len(chunk)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
                problems.append(f"{name}: cannot be read ({exc}): the file was altered")
                continue
            if sha.hexdigest() != (entry or {}).get("sha256"):
                problems.append(f"{name}: SHA-256 {sha.hexdigest()} does not match the manifest's "
                                f"{(entry or {}).get('sha256')}: the file was changed")
            elif size != entry.get("bytes"):
                problems.append(f"{name}: {size} bytes, the manifest says {entry.get('bytes')}")
            result.files += 1
        for name in dict.fromkeys(names):
            if name not in files and name != "manifest.json":
                problems.append(f"{name}: in the bundle but not listed in the manifest (added)")
        info = manifest.get("audit") or {}
        checkpoints = _check_bundle_checkpoints(zf, files, names, pinned, result)
        if "audit.jsonl" in files and "audit.jsonl" in names:
            result.events, last_seq = _check_audit(zf, info, problems, checkpoints)
            if last_seq is not None and (not checkpoints or max(checkpoints) < last_seq):
                result.notes.append(f"no checkpoint in the bundle covers audit events up to seq {last_seq}: "
                                    "check them with `attest audit verify` on the instance")
        if "items.csv" in files and "items.csv" in names:
            _check_self_decisions(zf, manifest, problems)
    return result


def _entry_name_problems(names: list[str]) -> list[str]:
    """Duplicate entries (`unzip` extracts the first, Python's zipfile reads the last) and names that could
    write outside the directory they are extracted to."""
    out, seen = [], set()
    for name in names:
        if name in seen:
            out.append(f"{name}: the zip holds more than one entry of this name (a second copy can hide a "
                       "changed one: tools disagree about which they extract)")
            continue
        seen.add(name)
        why = _unsafe_name(name)
        if why:
            out.append(f"{name!r}: not a safe entry name ({why})")
    return out


def _unsafe_name(name: str) -> str | None:
    if not name:
        return "empty"
    if "\\" in name:
        return "a backslash"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "a '..' component"
    if any(p in ("", ".") for p in parts):
        return "an empty or '.' component"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a control character"
    return None


def _check_signature(sig: Any, body: bytes, trusted_key: Ed25519PublicKey | None, fingerprint: str | None,
                     result: Verification) -> Ed25519PublicKey | None:
    """Verify the manifest's signature with the pinned key; return that key (None: not pinned or no match)."""
    problems = result.problems
    embedded = None
    if isinstance(sig, dict):
        try:
            embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(sig.get("public_key") or ""),
                                                                           validate=True))
            result.key_id = key_id(embedded)
        except ValueError:
            embedded = None
    if trusted_key is None and fingerprint:
        want = fingerprint.strip().lower().replace(":", "")
        if len(want) not in (16, 64) or any(c not in "0123456789abcdef" for c in want):
            problems.append(f"--fingerprint {fingerprint!r} is not a key id (16 hex digits) or a SHA-256 "
                            "fingerprint (64 hex digits)")
            return None
        if embedded is None or not key_fingerprint(embedded).startswith(want):
            problems.append(f"manifest.json is signed with key {result.key_id or '(none given)'}, not with the trusted "
                            f"key {want}: the bundle was signed, or re-signed, by someone else")
            return None
        trusted_key = embedded
    if trusted_key is None:
        problems.append(NO_TRUSTED_KEY)
        return None
    if not isinstance(sig, dict) or not sig.get("value"):
        problems.append("manifest.json has no signature")
        return trusted_key
    try:
        trusted_key.verify(base64.b64decode(str(sig["value"]), validate=True), body)
    except InvalidSignature:
        if embedded is None or public_key_raw(embedded) != public_key_raw(trusted_key):
            problems.append(f"manifest.json is signed with key {result.key_id or '(unknown)'}, not with the trusted "
                            f"key {key_id(trusted_key)}: the bundle was signed, or re-signed, by someone else")
        else:
            problems.append("manifest.json: the signature does not match its content (the manifest was changed "
                            "after signing)")
        return trusted_key
    except ValueError as exc:
        problems.append(f"manifest.json: the signature is malformed ({exc})")
        return trusted_key
    result.key_id = key_id(trusted_key)
    return trusted_key


def _check_bundle_checkpoints(zf: zipfile.ZipFile, files: dict[str, Any], names: list[str],
                              pinned: Ed25519PublicKey | None, result: Verification) -> dict[int, str]:
    """The audit-chain checkpoints the bundle carries: each signed by the pinned key. {seq: hash}."""
    out: dict[int, str] = {}
    for name in sorted(files):
        if not name.startswith(CHECKPOINT_PREFIX) or name not in names:
            continue
        if pinned is None:
            result.notes.append("the checkpoints were not checked: no trusted key")
            break
        doc, problem = parse_checkpoint(zf.read(name), pinned)
        if problem:
            result.problems.append(f"{name}: {problem}")
            continue
        out[int(doc["seq"])] = doc["hash"]
        result.checkpoints += 1
    return out


def _check_self_decisions(zf: zipfile.ZipFile, manifest: dict[str, Any], problems: list[str]) -> None:
    """Recount from items.csv the items decided by their own person (must be none), against the manifest."""
    import csv as csv_

    found, examples = 0, []
    try:
        with zf.open("items.csv") as fh:
            reader = csv_.reader(io.TextIOWrapper(fh, encoding="utf-8", newline=""))
            header = next(reader, None) or []
            if "person_identity_id" not in header or "decided_by_identity_id" not in header:
                problems.append("items.csv has no person_identity_id and decided_by_identity_id columns: "
                                "self-decisions cannot be checked")
                return
            item, person, decider = (header.index(c) for c in ("item_id", "person_identity_id",
                                                                 "decided_by_identity_id"))
            width = max(item, person, decider)
            for row in reader:
                if len(row) > width and row[decider] and row[decider] == row[person]:
                    found += 1
                    if len(examples) < 5:
                        examples.append(row[item])
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, csv_.Error) as exc:
        problems.append(f"items.csv: cannot be read ({exc})")
        return
    if found:
        problems.append(f"items.csv: {found} item(s) decided by the person whose access they are about "
                        f"(self-decisions, e.g. item {', '.join(examples)}); there must be none")
    recorded = (manifest.get("totals") or {}).get("self_decisions")
    if recorded is None:
        problems.append("manifest.json does not count self-decisions (totals.self_decisions)")
    elif recorded != found:
        problems.append(f"manifest.json counts {recorded} self-decisions, items.csv shows {found}")


def _check_audit(zf: zipfile.ZipFile, info: dict[str, Any], problems: list[str],
                 checkpoints: dict[int, str] | None = None) -> tuple[int, int | None]:
    """Each event's own hash; chain order (seq increasing); the link to the previous event where adjacent;
    the hash a signed checkpoint holds for an event's seq. Returns (events, last seq)."""
    checkpoints = checkpoints or {}
    n, prev = 0, None
    try:
        with zf.open("audit.jsonl") as fh:
            for line_no, line in enumerate(io.TextIOWrapper(fh, encoding="utf-8"), 1):
                if not line.strip():
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    problems.append(f"audit.jsonl line {line_no}: not JSON")
                    return n, None
                n += 1
                seq = ev.get("seq")
                where = f"audit.jsonl line {line_no} (event seq {seq}, {ev.get('action')})"
                if event_hash(ev) != ev.get("hash"):
                    problems.append(f"{where}: its content does not match its hash (edited)")
                if seq in checkpoints and checkpoints[seq] != ev.get("hash"):
                    problems.append(f"{where}: its hash differs from the signed checkpoint of seq {seq} "
                                    "(the chain was rewritten and re-hashed)")
                if prev is not None:
                    if not isinstance(seq, int) or seq <= prev["seq"]:
                        problems.append(f"{where}: out of chain order after seq {prev['seq']} (inserted or reordered)")
                    elif seq == prev["seq"] + 1 and ev.get("prev_hash") != prev.get("hash"):
                        problems.append(f"{where}: its prev_hash does not match the event before it (seq {prev['seq']})")
                elif seq == 1 and ev.get("prev_hash") != GENESIS:
                    problems.append(f"{where}: the first event of the chain must follow the genesis hash")
                prev = ev
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        problems.append(f"audit.jsonl: cannot be read ({exc})")
        return n, None
    if info.get("events") is not None and n != info["events"]:
        problems.append(f"audit.jsonl holds {n} events, the manifest says {info['events']}")
    head = (info.get("chain_head_at_export") or {}).get("seq")
    if prev is not None and head is not None and prev["seq"] > head:
        problems.append(f"audit.jsonl: event seq {prev['seq']} is newer than the chain head at export ({head})")
    return n, prev["seq"] if prev is not None and isinstance(prev.get("seq"), int) else None
