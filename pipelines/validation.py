"""One message for a failed validation of a config section: ``FILE: KEY: what is wrong (got VALUE)``,
for the experiment file (``train/config``), its ``finetune`` section and the ``search`` section."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(exc: ValidationError) -> dict:
    """The error to report: an unknown key before any other (it often causes the others)."""
    return sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]


def validation_message(exc: ValidationError, where: str, section: str = "") -> str:
    """``where: section.key: message (got value)`` for ``exc``'s first error; the members of a
    union type pydantic adds to the location (``int``, ``float``) are left out of the key."""
    error = first_error(exc)
    path = ".".join(str(p) for p in error["loc"] if not str(p).startswith(("int", "float")))
    key = ".".join(k for k in (section, path) if k) or "<top level>"
    got = error.get("input")
    shown = "" if got is None or isinstance(got, dict) else f" (got {got!r})"
    return f"{where}: {key}: {error['msg']}{shown}"
