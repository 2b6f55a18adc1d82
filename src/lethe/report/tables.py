"""Report tables that carry their data's limits: MIA results with intervals and unresolvable TPRs, example
generations, and the sacrifice rate with the reading of its sign.

* :func:`mia_rows`: one row per attack, the AUC with its bootstrap 95% interval, and the TPR at each FPR
  target, or "not resolvable" where the non-members cannot measure that FPR (``None`` in ``mia.json``,
  see :mod:`lethe.audit.mia`); the notes say why, once per non-member count;
* :func:`extraction_examples`: a few extraction items, evenly spaced from best to worst, for
  :meth:`lethe.report.Report.add_generations` (true vs generated suffix, differing tokens marked);
* :func:`sacrifice_flag`: what an SR = retain lost / forget removed means given the signs of its parts
  (DESIGN 3.4: lower is better, but only while the forget metric went down).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["NOT_RESOLVABLE", "extraction_examples", "interval_text", "mia_rows", "sacrifice_flag"]

FPR_LABELS = ("0.1%", "1%", "5%")
NOT_RESOLVABLE = "not resolvable"


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        return None
    return float(value)


def interval_text(value: Any, ci: Any, digits: int = 3) -> str | None:
    """"0.620 [0.550, 0.700]": a value with its 95% interval (the value alone without one; None if none)."""
    number = _real(value)
    if number is None:
        return None
    bounds = [_real(v) for v in ci] if isinstance(ci, list | tuple) and len(ci) == 2 else []
    if len(bounds) == 2 and None not in bounds:
        return f"{number:.{digits}f} [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"
    return f"{number:.{digits}f}"


def mia_rows(attacks: Mapping[str, Mapping[str, Any]], label: str | None = None
             ) -> tuple[list[dict[str, Any]], list[str]]:
    """(table rows, notes) for the attacks of an MIA result or summary (``mia.json``'s ``attacks``).

    ``label`` adds a first column (the model or run the attacks belong to).
    """
    rows: list[dict[str, Any]] = []
    unresolved: dict[Any, list[str]] = {}  # non-member count -> the FPR targets it cannot measure
    for name, attack in attacks.items():
        if not isinstance(attack, Mapping):
            continue
        row: dict[str, Any] = {"model": label} if label is not None else {}
        row["attack"] = name
        row["AUC [95% CI]"] = interval_text(attack.get("auc"), attack.get("auc_ci"))
        if "tpr_at_0_fpr" in attack:
            row["TPR at FPR 0"] = _real(attack.get("tpr_at_0_fpr"))
        for fpr in FPR_LABELS:
            key = f"tpr_at_{fpr}_fpr"
            note = attack.get(f"{key}_note")  # set by lethe.audit.mia where n_nonmembers < 1/target
            if note:
                row[f"TPR at {fpr} FPR"] = NOT_RESOLVABLE
                targets = unresolved.setdefault(attack.get("n_nonmembers"), [])
                if fpr not in targets:
                    targets.append(fpr)
            else:
                row[f"TPR at {fpr} FPR"] = interval_text(attack.get(key), attack.get(f"{key}_ci"))
        row["members / non-members"] = f"{attack.get('n_members', '?')} / {attack.get('n_nonmembers', '?')}"
        rows.append(row)
    return rows, [_unresolved_note(n, targets) for n, targets in unresolved.items()]


def _unresolved_note(n: Any, targets: list[str]) -> str:
    smallest = f"1/{n} = {100 / n:.2g}%" if isinstance(n, int) and n > 0 else "1/n"
    return (f"TPR at {' and '.join(targets)} FPR: {NOT_RESOLVABLE} with {n} non-members (the smallest non-zero "
            f"FPR they can measure is {smallest}); \"TPR at FPR 0\", the members found with no false positive "
            "at all, is the lowest operating point measured.")


def sacrifice_flag(retain_lost: float | None, forget_removed: float | None) -> str:
    """How to read SR = retain_lost / forget_removed (DESIGN 3.4; lower is better only when forget_removed > 0).

    The demo compares SRs only where the forget metric went down; a negative SR is good when the retain
    metric improved, and meaningless when the forget metric went up (the run did not forget).
    """
    r, f = _real(retain_lost), _real(forget_removed)
    if r is None or f is None:
        return "undefined (a metric is missing)"
    if f == 0:
        return "undefined: the forget metric did not change"
    if f < 0:
        return ("NOT comparable: the forget metric went UP (nothing forgotten), so a lower SR here does not mean "
                "better")
    if r < 0:
        return "negative: the retain metric improved while the forget metric went down (better than 0)"
    return "retain lost per unit of forget removed (lower is better)"


def extraction_examples(items: Sequence[Mapping[str, Any]], n: int = 6) -> tuple[list[dict[str, Any]], str]:
    """(examples for :meth:`Report.add_generations`, what they are) from ``extraction.json`` items.

    ``n`` documents evenly spaced in token match rate from the best to the worst (so the examples show the
    spread, not only the memorized ones); items without token texts (an older ``extraction.json``) are
    skipped.
    """
    usable = [i for i in items if isinstance(i.get("target_tokens"), list) and isinstance(i.get("generated_tokens"),
                                                                                          list)]
    ranked = sorted(usable, key=lambda i: (-float(i.get("token_match_rate") or 0.0), str(i.get("id"))))
    if len(ranked) > n:
        ranked = [ranked[round(k * (len(ranked) - 1) / (n - 1))] for k in range(n)] if n > 1 else ranked[:1]
    examples = [{"id": i.get("id"), "target": i["target_tokens"], "generated": i["generated_tokens"],
                 "prompt": i.get("prefix_tail") or "",
                 "scores": f"token match {100 * float(i.get('token_match_rate') or 0):.0f}%, ROUGE-L "
                           f"{float(i.get('rougeL') or 0):.2f}{', exact' if i.get('exact_match') else ''}"}
                for i in ranked]
    what = (f"{len(examples)} of {len(usable)} documents, evenly spaced in token match from best to worst; "
            "marked: generated tokens that differ from the true suffix at the same position (and the true "
            "tokens they replace); grey: the end of the prompt")
    return examples, what
