"""The password policy for break-glass local accounts (NIST SP 800-63B 5.1.1.2: length, and no
password from a list of commonly used ones; no composition rules).

A password is refused when it has fewer than MIN_CHARACTERS characters that are not white space (twelve
spaces, or "a" and eleven spaces, are not passwords), when it is a run of a keyboard row or of digits
("123456789012"), when it uses fewer than MIN_DISTINCT different
characters ("aaaaaaaaaaaa", "abababababab"), or when it is a common password: compared without case, and
also with the digits, punctuation and spaces at its ends taken off, because a length rule makes people
pad a common word ("Password2024!", "qwerty123456").

The list, `common-passwords.txt.gz` beside this file, is the one Django ships for its
CommonPasswordValidator (django/contrib/auth/common-passwords.txt.gz, Django 5.2, BSD-3-Clause): 19,640
lowercased, deduplicated passwords from Royce Williams' list,
https://gist.github.com/roycewilliams/226886fd01572964e1431ac8afc999ce
"""

from __future__ import annotations

import gzip
import string
from functools import cache
from pathlib import Path

MIN_CHARACTERS = 12
MIN_DISTINCT = 5
LIST_PATH = Path(__file__).with_name("common-passwords.txt.gz")
# a run along one of these is as guessable as a listed password ("123456789012", "qwertyuiopas")
SEQUENCES = ("0123456789" * 3, "9876543210" * 3, string.ascii_lowercase * 2, "qwertyuiopasdfghjklzxcvbnm" * 2,
             "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p" * 2)
_ENDS = string.digits + string.punctuation + string.whitespace


class PasswordPolicyError(ValueError):
    """Says what is wrong, never repeats the password."""


@cache
def common_passwords() -> frozenset[str]:
    with gzip.open(LIST_PATH, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


def problem(password: str) -> str | None:
    """What is wrong with this password, or None when the policy accepts it."""
    password = password or ""
    meaningful = [c for c in password if not c.isspace()]
    if len(meaningful) < MIN_CHARACTERS:
        return f"a password must have at least {MIN_CHARACTERS} characters that are not spaces"
    if len(set(meaningful)) < MIN_DISTINCT:
        return f"a password must use at least {MIN_DISTINCT} different characters"
    folded = password.strip().casefold()
    core = folded.strip(_ENDS)
    common = common_passwords()
    squeezed = folded.replace(" ", "")
    if folded in common or squeezed in common or (core and core in common) \
            or any(squeezed in run for run in SEQUENCES):
        return "this password is one of the most common passwords (or one with digits or symbols added): choose another"
    return None


def check(password: str) -> None:
    """Raise PasswordPolicyError when the policy refuses `password`."""
    message = problem(password)
    if message:
        raise PasswordPolicyError(message)
