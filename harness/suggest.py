""""Did you mean" for a misspelt key, value or name: the closest of the valid choices.

Used by the plan loader (unknown keys, bad enumerated values, ``--set`` overrides) and
by the command line. Pure; the similarity measure is ``difflib``'s.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: how alike a word and a choice must be to suggest it (difflib ratio, 0..1)
CUTOFF = 0.6


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like ``word`` (case-insensitively), or None if none is close."""
    options = [c for c in dict.fromkeys(choices) if c != word]
    if not word or not options:
        return None
    lowered = {c.lower(): c for c in options}
    hit = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=CUTOFF)
    return lowered[hit[0]] if hit else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"did you mean 'count'?"`` for the closest choice, or ``""`` if none is close."""
    hit = closest(word, choices)
    return f"did you mean {hit!r}?" if hit is not None else ""
