"""The fixed sequence declared on the design page before the data: a teacher of the paper's kind
(config.PAPER_KIND: the persona, by the prompt or put into the weights) has its claims 2-4 tested only where its
claim 1 is reproduced in the same run, each at the full α, so the family needs no correction. The finetuned
teacher, a positive control of the instrument, is not gated.

A teacher whose claim 1 is read and not reproduced is not trained by notebooks 03-05 at all (`untrained`): their
students would only feed a verdict the sequence does not read. Its rows then say "not tested", without a number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import pandas as pd

from . import stats
from .claims import INVALID, NOT_TESTED, REGISTRY, _row, arm_file, is_paper_claim
from .config import PAPER_KIND


class Gate(str, Enum):
    """What the fixed sequence did to a row (its GATE key): the claim was tested, not tested, or the gate
    could not be checked (no claim-1 verdict of the teacher in the run)."""
    TESTED = "tested"
    NOT_TESTED = NOT_TESTED
    NOT_CHECKED = "not checked"


@dataclass(frozen=True)
class FixedSequence:
    """The `teachers`' claim `first` is tested first at the full α, and their other paper claims at the full α only
    where `first` is reproduced. A claim not tested is not evidence either way."""
    teachers: tuple
    first: str

    def gates(self, row: dict) -> bool:
        return row.get("teacher") in self.teachers and is_paper_claim(row["claim"]) and row["claim"] != self.first

    def first_verdict(self, kind: str, verdicts) -> str | None:
        """The claim-1 verdict of teacher `kind` among a run's verdicts (rows or a table), None if it has none."""
        table = pd.DataFrame(list(verdicts) if isinstance(verdicts, list) else verdicts)
        if not {"claim", "teacher", "verdict"} <= set(table.columns):
            return None
        first = table[(table["claim"] == self.first) & (table["teacher"] == kind)]
        return None if first.empty else str(first["verdict"].iloc[0])

    def gate(self, kind: str, verdicts) -> Gate:
        return gate_of(self.first_verdict(kind, verdicts))


def gate_of(first_verdict: str | None) -> Gate:
    """What a teacher's claim-1 verdict (None: none in the run) makes of its claims 2-4."""
    return (Gate.NOT_CHECKED if first_verdict is None else
            Gate.TESTED if first_verdict == stats.REPRODUCED else Gate.NOT_TESTED)


SEQUENCE = FixedSequence(teachers=PAPER_KIND, first=REGISTRY[0].key)
GATE = "fixed_sequence"  # the key of a gated row: its Gate's value
TRAINED = "trained"      # False on the row of a teacher whose students the sequence did not train


def untrained(kinds, verdicts, sequence: FixedSequence = SEQUENCE) -> list[str]:
    """The teachers among `kinds` whose claims 2-4 the sequence will not read (their claim 1 read, not reproduced):
    notebooks 03-05 train none of their students."""
    return [k for k in kinds if k in sequence.teachers and sequence.gate(k, verdicts) is Gate.NOT_TESTED]


def untested_rows(kinds, claim_key: str, animal: str, verdicts, arms=(None,),
                  sequence: FixedSequence = SEQUENCE) -> list[dict]:
    """The rows of claim `claim_key` (one per arm) for teachers whose students were not trained: 'not tested',
    no number, the reason their claim 1's verdict."""
    claim = next(c for c in REGISTRY if c.key == claim_key)
    rows = []
    for kind in kinds:
        why = f"{kind} teacher's claim 1 is {sequence.first_verdict(kind, verdicts)} (fixed sequence)"
        for i, arm in enumerate(arms):
            row = _row(claim.key, arm_file(claim, i, arm), kind, animal, NOT_TESTED,
                       f"not tested (fixed sequence, declared before the data): {why}; its students were not "
                       "trained", math.nan, math.nan, math.nan, "", None, "replicate", f"the {why}; not trained")
            rows.append(row | {GATE: Gate.NOT_TESTED.value, TRAINED: False} | ({"arm": arm} if arm else {}))
    return rows


def fixed_sequence(rows: list[dict], verdicts, sequence: FixedSequence = SEQUENCE) -> list[dict]:
    """`rows` (verdict rows of claims.rank, full_finetuning, system_prompt) with `sequence` applied, given the
    verdict rows of the same run (a list of rows or results.read_verdicts' table) among which each gated teacher's
    first claim. A row not tested becomes 'not tested', the rule's own reading kept in its measurement for
    information; without the first claim's row the rows are left as they are and say so. Idempotent: a row
    that carries a Gate is passed over."""
    out = []
    for r in rows:
        if not sequence.gates(r) or r["verdict"] == INVALID or r.get(GATE) in {g.value for g in Gate}:
            out.append(r)
            continue
        who = f"the {r['teacher']} teacher"
        first_verdict = sequence.first_verdict(r["teacher"], verdicts)
        gate = gate_of(first_verdict)
        if gate is Gate.NOT_CHECKED:
            out.append(r | {GATE: gate.value,
                            "measurement": f"{r['measurement']}; fixed sequence not checked: no claim-1 verdict of "
                                           f"{who} for this run (notebook 02)",
                            "reason": f"{r.get('reason') or r['verdict']} (fixed sequence not checked)"})
        elif gate is Gate.TESTED:
            out.append(r | {GATE: gate.value,
                            "measurement": f"{r['measurement']}; tested: {who}'s claim 1 is reproduced (fixed sequence)"})
        else:
            out.append(r | {GATE: gate.value, "verdict": NOT_TESTED,
                            "measurement": f"not tested (fixed sequence, declared before the data): {who}'s claim 1 "
                                           f"is {first_verdict}; the rule's own reading, for information only: "
                                           f"{r['verdict']}: {r['measurement']}",
                            "reason": f"{who}'s claim 1 is {first_verdict} (fixed sequence); the rule alone reads "
                                      f"{r['verdict']}"})
    return out
