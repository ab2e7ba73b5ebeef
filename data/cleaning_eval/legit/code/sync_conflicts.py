"""Detect and describe edit conflicts between two versions of a Driftnote note.

Used by the desktop client before showing the side-by-side conflict dialog.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Version:
    note_id: str
    revision: int
    device: str
    paragraphs: tuple[str, ...]


@dataclass
class Conflict:
    index: int
    ours: str | None
    theirs: str | None


def find_conflicts(base: Version, ours: Version, theirs: Version) -> list[Conflict]:
    """Return paragraphs changed on both sides since `base`.

    A paragraph changed on only one side is not a conflict; the merge takes that side.
    """
    if not (base.note_id == ours.note_id == theirs.note_id):
        raise ValueError("versions belong to different notes")
    ours_changed = _changed_indexes(base.paragraphs, ours.paragraphs)
    theirs_changed = _changed_indexes(base.paragraphs, theirs.paragraphs)
    both = sorted(ours_changed & theirs_changed)
    out = []
    for i in both:
        a = ours.paragraphs[i] if i < len(ours.paragraphs) else None
        b = theirs.paragraphs[i] if i < len(theirs.paragraphs) else None
        if a != b:  # identical edits on both devices are not a conflict
            out.append(Conflict(i, a, b))
    return out


def _changed_indexes(old: tuple[str, ...], new: tuple[str, ...]) -> set[int]:
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    changed: set[int] = set()
    for tag, i1, i2, _j1, _j2 in matcher.get_opcodes():
        if tag != "equal":
            # a pure insertion has i1 == i2; count it against the paragraph it precedes
            changed.update(range(i1, max(i2, i1 + 1)))
    return changed
