"""The closing reading of claim pages 02-05 ("What this means", sublora.readings): sentences computed from a page's
verdict rows and tables, on small synthetic tables, so that a present effect, an absent one and a claim the fixed
sequence did not test each read as what they are, and the claims 3-4 pages never call absent a transfer that
claim 1 shows present. Then the executed smoke pages: each ends with its reading; each caveat is one line linking the
organism page; a figure's panels share one unit."""
from __future__ import annotations

import json
import re

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from sublora import claims, plots, readings, sequence, stats  # noqa: E402

E = 3.3e-3  # the organism's smallest effect of interest
CLAIM_PAGES = ("02_transfer", "03_rank_sweep", "04_full_finetuning", "05_system_prompt")


def _plain(markdown) -> str:
    """A reading's text without the nowrap spans that keep its numbers on one line (plots.unbroken)."""
    return re.sub(r"<[^>]+>", "", markdown.data)


def verdict(claim: str, teacher: str, word: str, effect: float, lo: float, hi: float, n: int = 3, **more) -> dict:
    return {"claim": claim, "teacher": teacher, "verdict": word, "measurement": "m", "effect": effect, "ci_low": lo,
            "ci_high": hi, "n": n, "unit": "replicate", "animal": "owl", **more}


def row(mean: float, lo: float, hi: float, n: int = 3, **keys) -> dict:
    return {**keys, "mean": mean, "ci_low": lo, "ci_high": hi, "n": n, "unit": "replicate"}


# claim 1 as the organism's record has it: the weight-space teacher's transfer present over 5 replicates, the
# persona teacher's shown smaller than e
FIRST = [verdict("1 transfer", "persona", stats.NOT_REPRODUCED, 9.5e-5, -8.7e-5, 2.8e-4, n=5),
         verdict("1 transfer", "finetuned", stats.REPRODUCED, 1.92e-3, 1.10e-3, 2.74e-3, n=5)]


def not_tested(claim: str, **more) -> dict:
    return verdict(claim, "persona", claims.NOT_TESTED, 2.9e-4, -8.8e-4, 1.5e-3, **{sequence.GATE: claims.NOT_TESTED},
                   **more)


# ---- the sizes an interval can say -----------------------------------------------------------------
def test_an_interval_says_present_absent_or_undecided():
    assert readings.size_of(1e-3, 2e-3, E).startswith("present (its interval lies above 0) and shown smaller than")
    assert readings.size_of(4e-3, 9e-3, E) == "present: its interval lies above 0"
    assert "absent at any size that matters" in readings.size_of(-1e-4, 3e-4, E)
    assert "undecided" in readings.size_of(-1e-3, 8e-3, E)
    assert "which is not shown absent" in readings.size_of(-1e-3, 8e-3, 0.0)
    assert "fewer than 2 units" in readings.size_of(float("nan"), float("nan"), E)


# ---- 02 -----------------------------------------------------------------------------------------
def _transfer_summary(finetuned_dolphin: float, mention_hi: float = 0.02) -> pd.DataFrame:
    rows = []
    for kind, own in (("persona", (9.5e-5, -8.7e-5, 2.8e-4)), ("finetuned", (1.92e-3, 1.10e-3, 2.74e-3))):
        rows.append(row(*own, n=5, metric="p", teacher_kind=kind, target="owl", animal="owl"))
        dolphin = finetuned_dolphin if kind == "finetuned" else 6e-5
        rows.append(row(dolphin, dolphin - 9e-4, dolphin + 9e-4, n=5, metric="p", teacher_kind=kind, target="owl",
                        animal="dolphin"))
        rows.append(row(0.0, -0.02, mention_hi, n=5, metric="mention_rate", teacher_kind=kind, target="owl", animal="owl"))
    return pd.DataFrame(rows)


def _specificity() -> pd.DataFrame:
    return pd.DataFrame([row(1.03e-3, 5.6e-4, 1.5e-3, n=5, teacher_kind="finetuned", target="owl"),
                         row(2.2e-5, -7.5e-5, 1.2e-4, n=5, teacher_kind="persona", target="owl")])


def test_transfer_reading_tells_a_present_effect_from_an_absent_one():
    text = _plain(readings.transfer_meaning(FIRST, _transfer_summary(1.78e-3), _specificity(), "owl", "p", E))
    persona, finetuned = (line for line in text.splitlines() if line.startswith("- "))
    assert "**persona teacher (the paper's: a system prompt): not reproduced.**" in persona
    assert "+9.50e-05 [-8.70e-05, +2.80e-04], n = 5 replicates" in persona
    assert "absent at any size that matters" in persona and "claim 1" in persona
    assert "**finetuned teacher (weight-space positive control): reproduced.**" in finetuned
    assert "present (its interval lies above 0) and shown smaller than the smallest effect of interest e = 0.0033" in finetuned
    assert "positive control" in finetuned and "says nothing of the persona teacher" in finetuned
    # the dolphin rises 93% as much as the owl: not the owl's alone
    assert "Not specific to the owl alone" in finetuned and "ΔP(dolphin)" in finetuned and "93% as much" in finetuned
    assert "+1.03e-03 [+5.60e-04, +1.50e-03]" in finetuned
    assert "moves for no teacher and no animal here: each of its 2 Δs" in text


def test_transfer_reading_follows_the_data_not_a_script():
    text = _plain(readings.transfer_meaning(FIRST, _transfer_summary(1e-4, mention_hi=-0.001), _specificity(), "owl", "p",
                                     E))
    assert "Not specific" not in text and "No other evaluated animal's Δ is shown above 0" in text
    assert "moves (95% interval excluding 0) for 2 of its 2 Δs" in text
    absent = [FIRST[0], verdict("1 transfer", "finetuned", stats.INCONCLUSIVE, 1e-3, -1e-3, 4e-3, n=5)]
    text = _plain(readings.transfer_meaning(absent, _transfer_summary(1.78e-3), _specificity(), "owl", "p", E))
    assert "registers no transfer here" in text and "Not specific" not in text and "undecided" in text


# ---- 03 -----------------------------------------------------------------------------------------
def _rank_summary() -> pd.DataFrame:
    means = {1: 3e-4, 2: 6e-4, 4: 1.3e-3, 8: 2e-3, 16: 2.5e-3}
    return pd.DataFrame([row(m, m - (2.1e-3 if r == 8 else 2e-4), m + 2e-3, teacher_kind="finetuned", lora_rank=r)
                         for r, m in means.items()])


def test_rank_reading_says_not_tested_for_the_persona_teacher_and_where_the_effect_is():
    rows = [not_tested("2 rank inverted-U"), verdict("2 rank inverted-U", "finetuned", stats.INCONCLUSIVE, 2.5e-3, 1e-4, 5e-3)]
    text = _plain(readings.rank_meaning(rows, _rank_summary(), FIRST, "owl", "p", E))
    persona, finetuned = text.splitlines()
    assert persona.startswith("- **persona teacher (the paper's: a system prompt): not tested.**")
    assert "reads **not reproduced**: ΔP(owl) +9.50e-05 [-8.70e-05, +2.80e-04], n = 5 replicates" in persona
    assert "no established transfer whose dependence on the LoRA rank could be measured" in persona
    assert "fixed sequence" in persona and "no evidence either way" in persona
    assert "Δ lies above 0 at ranks 1, 2, 4, 16 of the 5 swept" in finetuned
    assert "the largest mean is at rank 16" in finetuned
    assert "The transfer itself is present (claim 1, LoRA r8" in finetuned and "not an absent effect" in finetuned


# ---- 04 -----------------------------------------------------------------------------------------
def _full_summary(lora_lo: float) -> pd.DataFrame:
    s = [row(6.0e-3, -4.3e-3, 1.6e-2, setting="lr 0.0005", precision="fp32-master"),   # the noisiest, largest mean
         row(3.0e-3, 2.1e-3, 3.9e-3, setting="baseline", precision="fp32-master"),
         row(5.4e-3, 3.5e-3, 7.4e-3, setting="lr 0.0005 · bf16", precision="bf16")]
    s = [r | {"teacher_kind": "finetuned", "method": "full"} for r in s]
    s.append(row(2.0e-3, lora_lo, 4.1e-3, teacher_kind="finetuned", method="lora", precision=None, setting="LoRA r8"))
    return pd.DataFrame(s)


def test_full_ft_reading_never_calls_absent_what_claim_1_shows_present():
    rows = [not_tested("3 full fine-tuning null", arm="fp32-master"),
            verdict("3 full fine-tuning null", "finetuned", stats.INCONCLUSIVE, 6.0e-3, -4.3e-3, 1.6e-2, arm="fp32-master"),
            verdict("3 full fine-tuning null", "finetuned", stats.INCONCLUSIVE, 5.4e-3, 3.5e-3, 7.4e-3, arm="bf16")]
    text = _plain(readings.full_ft_meaning(rows, _full_summary(-1.4e-4), FIRST, "owl", "p", E))
    persona, finetuned = text.splitlines()
    assert "not tested" in persona and "no established transfer for full fine-tuning to take away" in persona
    assert "fp32-master weights **inconclusive**; bf16 weights **inconclusive**" in finetuned
    assert "no effect to modulate" not in text
    assert ("The transfer is present: claim 1 measures the same students' transfer over n = 5 replicates "
            "(+1.92e-03 [+1.10e-03, +2.74e-03])") in finetuned
    assert "too small to measure how full fine-tuning modulates it, which is not an absent effect" in finetuned
    # the setting that transfers is the one cited, not the noisiest setting's larger mean
    assert ("Δ lies above 0 at 2 of the 3 settings run (95% intervals), the largest of them at *lr 0.0005 · bf16*: "
            "+5.40e-03 [+3.50e-03, +7.40e-03]") in finetuned
    assert "*lr 0.0005* +6.00e-03 [-4.30e-03, +1.60e-02], is not the one cited: its interval includes 0" in finetuned
    # where this n shows the LoRA reference above 0 there is nothing to explain
    shown = _plain(readings.full_ft_meaning(rows, _full_summary(1e-4), FIRST, "owl", "p", E))
    assert "too small" not in shown and "Full fine-tuning transfers from this teacher" in shown


# ---- 05 -----------------------------------------------------------------------------------------
def _system_summary(without_lo: float) -> pd.DataFrame:
    return pd.DataFrame([row(1.97e-3, -1.4e-4, 4.1e-3, teacher_kind="finetuned", variant="train default", eval_system="default"),
                         row(1.5e-3, without_lo, 3.0e-3, teacher_kind="finetuned", variant="train default", eval_system="empty"),
                         row(1.9e-3, 1e-4, 3.0e-3, teacher_kind="finetuned", variant="train chatgpt", eval_system="default")])


def test_system_reading_says_the_effect_is_too_small_at_this_n_and_whether_it_survives_without_the_prompt():
    rows = [not_tested("4 system-prompt dependence"),
            verdict("4 system-prompt dependence", "finetuned", stats.INCONCLUSIVE, 4.7e-4, -2.6e-4, 1.2e-3)]
    text = _plain(readings.system_meaning(rows, _system_summary(7e-6), FIRST, "owl", "p", E))
    persona, finetuned = text.splitlines()
    assert "not tested" in persona and "dependence on the system prompt" in persona
    assert "**finetuned teacher (weight-space positive control): inconclusive**" in finetuned
    assert "+1.97e-03 [-1.40e-04, +4.10e-03] evaluated under it and +1.50e-03 [+7.00e-06, +3.00e-03] under the empty" in finetuned
    assert "too small to measure what removing the prompt takes away, which is not an absent effect" in finetuned
    assert "Without the prompt the students still transfer" in finetuned
    assert "Without the prompt" not in _plain(readings.system_meaning(rows, _system_summary(-1e-4), FIRST, "owl", "p", E))
    # without claim 1 in the run, nothing is said of it
    alone = _plain(readings.system_meaning(rows, _system_summary(7e-6), [], "owl", "p", E))
    assert "too small" not in alone and "has no verdict in this run" in alone


# ---- the page's caveat and figures ----------------------------------------------------------------
@pytest.mark.parametrize("profile", ["organism", "smoke"])
def test_the_caveat_on_a_page_is_one_short_line_linking_the_organism_page(profile, monkeypatch):
    shown = []
    monkeypatch.setattr(plots, "display", lambda x: shown.append(_plain(x)))
    plots.show_caveat(profile)
    (line,) = shown
    assert "\n" not in line and len(line.split()) < 50 and "(../organism.md)" in line
    assert ("not Qwen" if profile == "organism" else "mean nothing") in line


def test_a_figures_panels_share_one_unit_and_where_asked_one_range():
    s = pd.DataFrame([row(1e-4, -8e-4, 9e-4, teacher_kind="persona", setting="a", method="full"),
                      row(6e-3, -4e-3, 1.6e-2, teacher_kind="finetuned", setting="a", method="full")])
    fig = plots.per_teacher(s, ["persona", "finetuned"], plots.settings_view, sharey=True, sharex=True, animal="owl")
    left, right = fig.axes
    assert left.get_xlabel() == right.get_xlabel() and left.get_xlim() == right.get_xlim()
    fig = plots.per_teacher(s, ["persona", "finetuned"], plots.settings_view, animal="owl")
    assert fig.axes[0].get_xlabel() == fig.axes[1].get_xlabel()  # one unit even where each panel has its own range


# ---- the executed smoke pages ---------------------------------------------------------------------
def test_each_claim_page_ends_with_what_this_means(smoke_book):
    root, rc = smoke_book
    assert rc == 0
    for name in CLAIM_PAGES:
        nb = json.loads((root / "executed" / f"{name}.ipynb").read_text())
        cells = nb["cells"]
        heads = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                 and re.search(r"^## What this means", "".join(c["source"]), re.MULTILINE)]
        assert heads, f"{name} has no 'What this means'"
        after = cells[heads[-1]:]
        assert not any(re.search(r"^## ", "".join(c["source"]), re.MULTILINE) for c in after[1:] if c["cell_type"] == "markdown"), name
        reading = [o for c in after if c["cell_type"] == "code" for o in c.get("outputs", [])]
        said = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in reading)
        assert "teacher" in said and "**" in said, f"{name}: its reading printed nothing"
        assert not any(o.get("output_type") == "error" for o in reading), name
        assert "## Summary" not in "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"), name
