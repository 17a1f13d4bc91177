"""The one secret masker: what the journal, the console, reports and drivers show instead of a secret.

Three layers, applied to every string of a record (``mask_value``) or to one text (``Masker.text``):

1. known secret strings (passwords read from environment variables, lines of key files), and
   their stripped forms, are replaced by ``***`` wherever they appear;
2. values under keys named like password / secret / token / passphrase / private_key are replaced
   whatever they hold (keys ending in ``_env``, ``_file``, ``_path`` or ``_name`` say where a
   secret lives, not the secret, and are kept);
3. lines of device or host output that carry a secret by their syntax (``enable secret 5 $1$..``,
   ``snmp-server community public RO``, ``password: x``, ``set ... encrypted-password "..."``,
   ``tacacs-server key 7 0822..``) keep their keyword and lose the rest of the line.

Then every string is capped (:data:`TEXT_CAP` bytes of UTF-8): a device that answers with
megabytes fills neither the journal nor the screen, and the cut says how many bytes were dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
TEXT_CAP = 8192  # bytes of UTF-8 kept of one string (device output, host output, messages)

# Keys whose value is a secret wherever they appear in a payload.
_SECRET_KEY = re.compile(r"password|passwd|secret|token|passphrase|private_?key", re.IGNORECASE)
# ... unless they only say where the secret lives.
_SECRET_KEY_REFERENCE = re.compile(r"(_env|_file|_path|_name)$", re.IGNORECASE)
# Lines of multi-line secrets (key files) shorter than this are not masked on their own
# ("-----END ...-----" lines would otherwise mask harmless text).
_MIN_SECRET_LINE = 16
# A secret by its syntax in a line of device/host output: the keyword stays, the rest goes.
_SECRET_LINE = re.compile(
    r"(?P<head>\b(?:password|passwd|secret|community|pre-shared-key|key-string|passphrase|psk|"
    r"encrypted-password|authentication-key|auth-key|wpa-psk|private-key|key\s+[0-9])\b)"
    r"(?P<sep>[ \t]*[:=][ \t]*|[ \t]+)(?P<value>[^\s*:=][^\n]*)",  # `lab-secret.yml` is no secret line
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _SECRET_KEY_REFERENCE.search(key)


def secret_needles(secrets: Iterable[str]) -> tuple[str, ...]:
    """Every string to mask, longest first: each secret, its URL-encoded forms (a password in a URL or a
    form body, as HTTP clients echo it in errors), and each long line of multi-line secrets."""
    needles: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        needles.update({secret, quote(secret, safe=""), quote_plus(secret, safe="")})
        stripped = secret.strip()
        if stripped:
            needles.add(stripped)
        if "\n" in stripped:
            needles.update(line.strip() for line in stripped.splitlines() if len(line.strip()) >= _MIN_SECRET_LINE)
    return tuple(sorted(needles, key=lambda s: (-len(s), s)))


def mask_secret_lines(text: str) -> str:
    """Mask what follows a secret keyword in each line (device configs, host output)."""
    if len(text) < 4:
        return text
    return _SECRET_LINE.sub(lambda m: f"{m.group('head')}{m.group('sep') or ' '}{MASK}", text)


def truncate(text: str, cap: int = TEXT_CAP) -> str:
    """At most ``cap`` bytes of UTF-8, then a note of how many bytes were dropped."""
    if len(text) <= cap // 4:  # cannot exceed the cap even at 4 bytes a character
        return text
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) <= cap:
        return text
    kept = data[:cap].decode("utf-8", errors="ignore")
    return f"{kept}... [{len(data) - len(kept.encode('utf-8', errors='surrogatepass'))} bytes dropped]"


def mask_text(text: str, needles: tuple[str, ...] = (), cap: int | None = TEXT_CAP, *, lines: bool = True) -> str:
    for needle in needles:
        if needle in text:
            text = text.replace(needle, MASK)
    if lines:
        text = mask_secret_lines(text)
    return truncate(text, cap) if cap is not None else text


def mask_value(value: Any, needles: tuple[str, ...] = (), cap: int | None = TEXT_CAP, *, lines: bool = True) -> Any:
    """``value`` with every string masked and capped, recursively (keys included, never capped).
    ``lines=False`` masks only the known secrets (for documents whose id is their hash, such as a plan)."""
    if isinstance(value, str):
        return mask_text(value, needles, cap, lines=lines)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            masked_key = mask_text(key, needles, None) if isinstance(key, str) else key
            if isinstance(key, str) and is_secret_key(key) and item is not None:
                out[masked_key] = MASK
            else:
                out[masked_key] = mask_value(item, needles, cap, lines=lines)
        return out
    if isinstance(value, list):
        return [mask_value(v, needles, cap, lines=lines) for v in value]
    if isinstance(value, tuple):
        return tuple(mask_value(v, needles, cap, lines=lines) for v in value)
    return value


class Masker:
    """Masks the given secret strings (and secret-looking lines); callable on a text."""

    def __init__(self, secrets: Iterable[str] = (), cap: int | None = TEXT_CAP) -> None:
        self._secrets = [s for s in secrets if s]
        self._needles = secret_needles(self._secrets)
        self.cap = cap

    def add(self, secret: str) -> None:
        if secret:
            self._secrets.append(secret)
            self._needles = secret_needles(self._secrets)

    @property
    def needles(self) -> tuple[str, ...]:
        return self._needles

    def text(self, text: str) -> str:
        return mask_text(text, self._needles, self.cap)

    def value(self, value: Any) -> Any:
        return mask_value(value, self._needles, self.cap)

    def exact(self, value: Any) -> Any:
        """Only the known secrets, nothing capped: a plan's strings are inventory text, never output."""
        return mask_value(value, self._needles, None, lines=False)

    def __call__(self, text: str) -> str:
        return self.text(text)


def mask_secrets(value: Any, secrets: Iterable[str]) -> Any:
    """Replace every occurrence of each secret string by ``***``, recursively (keys included).

    Values under keys named like password / secret / token / passphrase / private_key are masked
    whatever they contain; multi-line secrets are masked line by line; secret-looking lines of
    output lose their value; long strings are capped.
    """
    return mask_value(value, secret_needles(secrets))


__all__ = ["MASK", "TEXT_CAP", "Masker", "is_secret_key", "mask_secret_lines", "mask_secrets", "mask_text",
           "mask_value", "secret_needles", "truncate"]

