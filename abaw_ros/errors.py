"""How an error's text becomes one line of a message (a log line, a CLI error, a reason)."""
from __future__ import annotations


def one_line(error: object, limit: int | None = None) -> str:
    """``error``'s text with every run of whitespace (newlines included) as one space; the
    exception's type name when it has no text; cut to ``limit`` characters with "..."."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


# Values taken from a message (encodings, formats, frame ids) are shown at most this long in
# errors: a stream of frames with megabyte-long strings must not become megabytes of log.
SHOWN_CHARS = 40


def shown(text: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(text)``, cut to about ``limit`` characters with the full length noted."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} chars)"
