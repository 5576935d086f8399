""""What we found": the claims table in plain words, for the top of a report and the README's headline.

Each claim lands in one group by its verdict: reproduces (agrees), does not reproduce (disagrees), open
(inconclusive: with what would decide it) or not run. Each line carries its number (the compared quantity
with its 95% interval), never an adjective; the verdicts are the claims table's, so the two cannot
disagree.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from .claims import CLAIMS, NOT_RUN, Row
from .stats import AGREES, DISAGREES, INCONCLUSIVE

GROUPS = [(AGREES, "Reproduces at this budget"), (DISAGREES, "Does not reproduce"),
          (INCONCLUSIVE, "Open"), (NOT_RUN, "Not run")]


def headline_number(row: Row) -> str:
    """The row's one number: its first compared quantity with its interval ('' when none)."""
    return row.compared[0].text() if row.compared else ""


def headline(rows: Dict[str, Row]) -> List[dict]:
    """One entry per claim: id, claim, verdict, number (for summary.json and the README)."""
    return [{"id": cid, "claim": claim, "verdict": rows[cid].verdict, "number": headline_number(rows[cid])}
            for cid, claim, *_ in CLAIMS]


def what_we_found(rows: Dict[str, Row], datasets: List[str]) -> Tuple[List[Tuple[str, List[str]]], str]:
    """([(group title, one line per claim)] for the verdict groups that have claims, what the setting cannot
    say)."""
    claim_of = {cid: (claim, source) for cid, claim, source, *_ in CLAIMS}
    groups = []
    for verdict, title in GROUPS:
        ids = [cid for cid in claim_of if rows[cid].verdict == verdict]
        if not ids:
            continue
        lines = []
        for cid in ids:
            r, (claim, source) = rows[cid], claim_of[cid]
            text = f"{cid} ({source}): {claim}"
            number = headline_number(r)
            if number and verdict != NOT_RUN:
                text += f"; {number}"
            if verdict == INCONCLUSIVE:
                needs = r.needs or [r.reason]
                text += ". Would decide it: " + "; ".join(needs)
                if r.leaning:
                    text += f" (the interval alone says: {r.leaning})"
            elif verdict == NOT_RUN:
                text += f". {r.reason[:1].upper()}{r.reason[1:]}"
            lines.append(f"{text}.")
        groups.append((f"{title} ({len(ids)} of {len(CLAIMS)})", lines))
    images = [d for d in datasets if not d.startswith("toy-")]
    if images:
        scope = (f"Measured on {', '.join(images)}. The papers made their image claims on CIFAR-10 and larger "
                 f"sets; a claim that reproduces here holds at this scale (the `paper` profile runs EDM's CIFAR-10 "
                 f"protocol).")
    else:
        scope = (f"Measured on 2D toy data ({', '.join(datasets) or 'none'}): it shows the mechanisms behind the "
                 f"memorization claims, not the image claims.")
    return groups, scope
