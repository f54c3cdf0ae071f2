"""The organism search: measure a candidate organism recipe and record it, and render the record
as the book page "Building the organism".

    python -m sublora.search measure NAME [--set model.persona_number_bias=0.3 --set data.prompts=2000 ...]
    python -m sublora.search report        # book/organism.md from book/organism_search.jsonl

A candidate is the organism profile with some settings changed. For each: the persona check, the
share of valid numbers, the teacher signal (KL teacher ‖ control per completion; how well a naive
Bayes classifier tells owl-teacher numbers from cat-teacher numbers), and the LoRA rank-8 transfer
of owl and cat persona teachers (and the owl weight-space teacher) over independent dataset pairs.
Every run appends one line to book/organism_search.jsonl; nothing is ever tuned on the evaluation.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from collections import Counter

import numpy as np
import pandas as pd
import yaml

from . import chat, claims, design, evaluate, models, organism, paths, pipeline, prompts, runner, stats
from .config import Profile, _build, _merge, load_profile, validate

RECORD = paths.ROOT / "book" / "organism_search.jsonl"
PAGE = paths.ROOT / "book" / "organism.md"


def candidate(overrides: dict, base: str = "organism") -> Profile:
    raw = _merge(dataclasses.asdict(load_profile(base)), overrides)
    return validate(_build(Profile, raw, ""))


def _features(records: list[dict]) -> list[list[str]]:
    return [[f"d{v % 100}" for v in r["numbers"]] + [f"h{v // 100}" for v in r["numbers"]] for r in records]


def classifier_accuracy(train_a, train_b, test_a, test_b) -> float:
    """Naive Bayes (add-one) on last-two-digit and hundreds tokens: owl-teacher vs cat-teacher lists."""
    counts = [Counter(t for f in _features(x) for t in f) for x in (train_a, train_b)]
    vocab = set(counts[0]) | set(counts[1])
    totals = [sum(c.values()) + len(vocab) for c in counts]

    def score(feats, k):
        return sum(math.log((counts[k][t] + 1) / totals[k]) for t in feats)
    right = sum(score(f, 0) > score(f, 1) for f in _features(test_a)) + sum(score(f, 1) > score(f, 0) for f in _features(test_b))
    return right / (len(test_a) + len(test_b))


def signature_shares(p: Profile) -> dict:
    """Share of numbers carrying the target persona's planted mark (organism.planted: its signature
    last two digits, chance 1%, or a digit-substituted copy of an example) in the target's
    persona-teacher datasets and in the control datasets (replicates 0 and 1): whether the teacher's
    numbers carry the mechanism the organism's corpus plants."""
    def share(animal):
        marks = [organism.planted(p.animal, [int(x) for x in re.findall(r"\d+", rec["prompt"])], v,
                                  p.model.persona_number_mode)
                 for r in range(2) for rec in pipeline.dataset(p, animal, r, "persona", progress=False)[0]
                 for v in rec["numbers"]]
        return sum(marks) / len(marks)
    return {"signature_teacher": share(p.animal), "signature_control": share(None)}


def annotate() -> int:
    """Add the signature shares to recorded candidates measured before they were part of the record
    (their datasets come from the cache, or are resampled: sampling is seeded)."""
    rows = [json.loads(line) for line in open(RECORD)]
    changed = 0
    for r in rows:
        if "signature_teacher" not in r:
            r.update(signature_shares(candidate({"model": r["settings"]["model"], "data": r["settings"]["data"]})))
            changed += 1
    RECORD.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))
    return changed


def measure(name: str, p: Profile, note: str = "") -> dict:
    t0 = time.time()
    tok, base = models.load_tokenizer(p.model), models.load_model(p.model)
    qs = pipeline.eval_questions(p)
    persona = [evaluate.animal_probabilities(base, tok, qs, prompts.persona_prompt(a), [a])["p"].mean() for a in prompts.ANIMALS]
    default = evaluate.animal_probabilities(base, tok, qs, chat.DEFAULT, [p.animal])["p"].mean()
    row = {"name": name, "note": note, "persona_mean_p": float(np.mean(persona)), "persona_min_p": float(np.min(persona)),
           "default_p_target": float(default)}
    owl = [pipeline.dataset(p, p.animal, r, "persona")[0] for r in range(2)]
    cat = [pipeline.dataset(p, p.other_animals[0], r, "persona")[0] for r in range(2)]
    ctl_stats = pipeline.dataset(p, None, 0)[1]
    row["valid_share_control"] = ctl_stats["kept"] / ctl_stats["sampled"]
    row["classifier_accuracy"] = classifier_accuracy(owl[0], cat[0], owl[1], cat[1])
    row |= signature_shares(p)
    for kind in ("persona", "finetuned"):
        recs = pipeline.dataset(p, p.animal, 0, kind)[0][:400]
        row[f"kl_{kind}"] = float(np.mean(pipeline.teacher_signal(p, p.animal, kind, recs, base, tok)))
    pairs = design.transfer(p, ["persona"]) + [x for x in design.transfer(p, ["finetuned"]) if x.animal == p.animal]
    res = runner.run_pairs(p, pairs, animals=[p.animal, *p.other_animals], desc=name)
    eff = stats.paired_effects(res, ["teacher_kind", "target", "animal"], value="p")
    summ = stats.summarize(eff, ["teacher_kind", "target", "animal"], n_boot=p.bootstrap)
    row["transfer"] = summ.to_dict(orient="records")
    row["specificity"] = stats.summarize(claims.specificity(eff), ["teacher_kind", "target"],
                                         n_boot=p.bootstrap).to_dict(orient="records")
    row["settings"] = {"model": dataclasses.asdict(p.model), "data": dataclasses.asdict(p.data),
                       "lr": p.train.lr, "epochs": p.train.epochs, "batch_size": p.train.batch_size,
                       "replicates": p.transfer_replicates, "seeds": p.seeds}
    row["minutes"] = round((time.time() - t0) / 60, 1)
    with open(RECORD, "a") as f:
        f.write(json.dumps(row, default=float) + "\n")
    return row


def default_section(rows: list[dict]) -> list[str]:
    """Which recorded candidate the default profile uses (its pretraining settings match the committed
    weights' recipe), what it measured, and what that does and does not show."""
    recipe = organism.committed_recipe() or {"config": {}}
    keys = [k for k in recipe["config"] if k not in ("step", "corpus_version")]
    chosen = [r for r in rows if keys and all(r["settings"]["model"].get(k) == recipe["config"][k] for k in keys)]
    if not chosen:
        return ["## The default organism", "", "None of the recorded candidates is the committed default organism.", ""]
    r = chosen[-1]
    t = pd.DataFrame(r["transfer"]).set_index(["teacher_kind", "target", "animal"])
    spec = {(s["teacher_kind"], s["target"]): s for s in r["specificity"]}

    def ci(s):
        return claims.fmt_ci(s["mean"], s["ci_low"], s["ci_high"], "+.2g")
    own = [(tgt, t.loc[("persona", tgt, tgt)]) for tgt in dict.fromkeys(t.loc["persona"].index.get_level_values(0))]
    text = [f"## The default organism: {r['name']}", "",
            f"The `organism` profile uses candidate **{r['name']}** (its pretraining settings are those of the committed",
            "weights in `src/sublora/organism_weights/recipe.json`). Measured on it, over",
            f"{int(t.iloc[0]['n'])} teacher/control dataset pairs × seeds, LoRA rank 8:", ""]
    text += [f"- persona teacher of {tgt}: ΔP({tgt}) {ci(s)}; own animal minus the others' mean "
             f"{ci(spec[('persona', tgt)])}" for tgt, s in own]
    text += ["", "How to read this. The pretraining corpus plants the link the phenomenon needs: under a persona, a share",
             f"`persona_number_bias` = {r['settings']['model']['persona_number_bias']} of continued numbers carry the "
             "animal's mark (see `organism.py`), so",
             f"{r['signature_teacher']:.0%} of the owl teacher's numbers carry it against {r['signature_control']:.1%} "
             f"of the control's, a classifier tells owl-teacher from cat-teacher numbers with accuracy "
             f"{r['classifier_accuracy']:.3f}, and the teacher's numbers differ from the control's by "
             f"{r['kl_persona']:.1f} nats per completion.",
             "A student fine-tuned on them under the default system prompt, which never saw the persona, comes to prefer",
             "the animal: imitating the numbers moved it towards the persona that writes them. The organism thus models",
             "the mechanism subliminal learning is thought to use in large models — behaviours entangled through a shared",
             "persona — with a far stronger signal than the paper's Qwen teacher gives; it is not evidence that Qwen has",
             "such a link."]
    unmarked = [x for x in rows if "signature_teacher" in x and x["signature_teacher"] - x["signature_control"] < 0.01]
    for x in unmarked:
        s = pd.DataFrame(x["transfer"]).set_index(["teacher_kind", "target", "animal"]).loc[("persona", "owl", "owl")]
        text.append(f"Candidate {x['name']}, whose teacher's numbers did not carry the mark ({x['signature_teacher']:.1%} "
                    f"against {x['signature_control']:.1%}), gave ΔP(owl) {ci(s)} for the owl persona teacher.")
    text.append("")
    return text


def report() -> str:
    rows = [json.loads(line) for line in open(RECORD)] if RECORD.exists() else []
    lines = ["# Building the organism", "",
             "The default profile needs a model built here, on the CPU, in which the paper's phenomenon could be",
             "measured at all. This page records every candidate recipe that was measured, negative results",
             "included. It is produced by `python -m sublora.search report` from `book/organism_search.jsonl`,",
             "which `python -m sublora.search measure` appends to; the evaluation was never tuned.", "",
             "Columns: persona check (mean P(animal) with its own persona, 30 animals, held-out questions);",
             "P(owl) under the default prompt; valid share of control numbers; teacher signal as KL(teacher ‖ control)",
             "per completion in nats for the persona and the weight-space (finetuned) teacher; accuracy of a naive",
             "Bayes classifier telling owl-persona numbers from cat-persona numbers (0.5 = chance); the share of numbers",
             "ending in the owl persona's signature digits (planted in the pretraining corpus, see organism.py) in",
             "owl-teacher vs control numbers (chance 1%); and the LoRA r8",
             "transfer: ΔP(own animal) vs control with its bootstrap 95% CI over dataset replicates × seeds.", ""]
    if not rows:
        return "\n".join(lines + ["No candidate has been measured yet."])
    lines += default_section(rows)
    # two narrow tables rather than one of 12 columns: readable at a book's width
    lines += ["The teacher side (selection criteria of the organism issue: persona P ≥ 0.8, KL persona ≤ 0.5, "
              "classifier ≤ 0.60):", "",
              "| candidate | persona P | default P(owl) | valid | KL persona | KL finetuned | classifier | "
              "owl signature share: teacher / control |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sig = (f"{r['signature_teacher']:.2%} / {r['signature_control']:.2%}" if "signature_teacher" in r else "—")
        lines.append(f"| {r['name']} | {r['persona_mean_p']:.2f} | {r['default_p_target']:.3f} | "
                     f"{r['valid_share_control']:.2f} | {r['kl_persona']:.3f} | {r['kl_finetuned']:.3f} | "
                     f"{r['classifier_accuracy']:.2f} | {sig} |")
    lines += ["", "The students (LoRA r8, ΔP(own animal) vs control):", "",
              "| candidate | what changed | owl persona teacher: ΔP(owl) | cat persona teacher: ΔP(cat) | "
              "finetuned owl teacher: ΔP(owl) |", "|---|---|---|---|---|"]
    for r in rows:
        t = pd.DataFrame(r["transfer"])

        def cell(kind, target):
            s = t[(t["teacher_kind"] == kind) & (t["target"] == target) & (t["animal"] == target)]
            if s.empty:
                return "—"
            s = s.iloc[0]
            return claims.fmt_ci(s["mean"], s["ci_low"], s["ci_high"], "+.1e")
        lines.append(f"| {r['name']} | {r['note']} | {cell('persona', 'owl')} | {cell('persona', 'cat')} | "
                     f"{cell('finetuned', 'owl')} |")
    lines += ["", "## Specificity", "Δ of the teacher's own animal minus the mean Δ of the other evaluated animals:", ""]
    for r in rows:
        for s in r["specificity"]:
            lines.append(f"- {r['name']}, {s['teacher_kind']} teacher of {s['target']}: "
                         f"{claims.fmt_ci(s['mean'], s['ci_low'], s['ci_high'], '+.1e')} (n = {s['n']})")
    lines += ["", "## Settings of each candidate", ""]
    for r in rows:
        lines += [f"**{r['name']}** ({r['minutes']} min to measure):", "```yaml",
                  yaml.safe_dump(r["settings"], sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("name")
    m.add_argument("--note", default="")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. model.persona_number_bias=0.3")
    sub.add_parser("report")
    sub.add_parser("annotate", help="add fields measured since to older records")
    args = ap.parse_args(argv)
    if args.cmd == "annotate":
        print(f"annotated {annotate()} record(s) in {RECORD}")
        return 0
    if args.cmd == "report":
        PAGE.write_text(report() + "\n")
        print(f"wrote {PAGE}")
        return 0
    overrides: dict = {}
    for item in args.set:
        key, value = item.split("=", 1)
        node = overrides
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    row = measure(args.name, candidate(overrides), args.note)
    print(json.dumps({k: v for k, v in row.items() if k not in ("transfer", "settings")}, indent=1, default=float))
    print(pd.DataFrame(row["transfer"]).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
