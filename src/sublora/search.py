"""The organism search: measure a candidate organism recipe and record it, and render the record
as the book page "Building the organism".

    sublora search measure NAME [--set model.persona_number_bias=0.03 ...] [--cross] [--teacher-only]
    sublora search report        # book/organism.md from book/organism_search.jsonl

A candidate is the organism profile with some settings changed. Its teacher side comes first:
persona following, the share of valid numbers, KL(teacher ‖ control) per completion, classifiers
telling owl-teacher from cat-teacher numbers, the share of numbers carrying a planted mark. Only a
candidate that passes the criteria fixed in advance (CRITERIA) has students trained: the LoRA rank-8
transfer of its persona teachers and the owl weight-space teacher over independent dataset pairs,
with the claim-1 verdict and the channel controls (shuffled numbers, cross-initialisation).
Every run appends one line to book/organism_search.jsonl; nothing is ever tuned on the evaluation.
The record, the criteria, the rule and the page are sublora.search_record (no torch).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
from collections import Counter

import numpy as np
import yaml

from . import chat, claims, command, design, evaluate, models, organism, organism_recipe, pipeline, prompts, runner, search_record, stats, tables
from .config import DEFAULT_PROFILE, Profile, from_mapping, load_profile


def _merge(base: dict, over: dict) -> dict:
    """`over` laid on `base`, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def candidate(overrides: dict, base: str = DEFAULT_PROFILE) -> Profile:
    return from_mapping(_merge(dataclasses.asdict(load_profile(base)), overrides))


def _features(records: list[dict]) -> list[list[str]]:
    return [[f"d{v % 100}" for v in r["numbers"]] + [f"h{v // 100}" for v in r["numbers"]] for r in records]


def classifier_accuracy(train_a, train_b, test_a, test_b) -> float:
    """Naive Bayes (add-one) on last-two-digit and hundreds tokens: owl-teacher vs cat-teacher lists
    (the first records' measure, kept for comparison with them)."""
    counts = [Counter(t for f in _features(x) for t in f) for x in (train_a, train_b)]
    vocab = set(counts[0]) | set(counts[1])
    totals = [sum(c.values()) + len(vocab) for c in counts]

    def score(feats, k):
        return sum(math.log((counts[k][t] + 1) / totals[k]) for t in feats)
    right = sum(score(f, 0) > score(f, 1) for f in _features(test_a)) + sum(score(f, 1) > score(f, 0) for f in _features(test_b))
    return right / (len(test_a) + len(test_b))


def _number_text(records: list[dict]) -> list[str]:
    return [" ".join(str(v) for v in r["numbers"]) for r in records]


def logistic_accuracy(train_a, train_b, test_a, test_b) -> float:
    """The organism issue's generic classifier: logistic regression (scikit-learn) on digit n-grams
    (1-3 characters within a number) and number n-grams (single numbers and adjacent pairs), trained
    on one dataset replicate of each teacher and scored on another (held out): accuracy, 0.5 = chance."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(CountVectorizer(analyzer="char_wb", ngram_range=(1, 3)),
                          CountVectorizer(token_pattern=r"\d+", ngram_range=(1, 2)))
    model = make_pipeline(features, LogisticRegression(max_iter=2000))
    model.fit(_number_text(train_a) + _number_text(train_b), [0] * len(train_a) + [1] * len(train_b))
    return float(model.score(_number_text(test_a) + _number_text(test_b), [0] * len(test_a) + [1] * len(test_b)))


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


def teacher_side(p: Profile) -> dict:
    """The candidate's teacher-side figures (no student is trained): persona following, the control's
    valid share, the classifiers, the planted-mark shares and KL(teacher ‖ control) per completion."""
    tok, base = models.load_tokenizer(p.model), models.load_model(p.model)
    qs = pipeline.eval_questions(p)
    persona = [evaluate.animal_probabilities(base, tok, qs, prompts.persona_prompt(a), [a])["p"].mean() for a in prompts.ANIMALS]
    default = evaluate.animal_probabilities(base, tok, qs, chat.DEFAULT, [p.animal])["p"].mean()
    row = {"persona_mean_p": float(np.mean(persona)), "persona_min_p": float(np.min(persona)),
           "default_p_target": float(default)}
    owl = [pipeline.dataset(p, p.animal, r, "persona")[0] for r in range(2)]
    cat = [pipeline.dataset(p, p.other_animals[0], r, "persona")[0] for r in range(2)]
    ctl_stats = pipeline.dataset(p, None, 0)[1]
    row["valid_share_control"] = ctl_stats["kept"] / ctl_stats["sampled"]
    row["classifier_accuracy"] = classifier_accuracy(owl[0], cat[0], owl[1], cat[1])
    row["classifier_lr"] = logistic_accuracy(owl[0], cat[0], owl[1], cat[1])
    row |= signature_shares(p)
    for kind in ("persona", "finetuned"):
        recs = pipeline.dataset(p, p.animal, 0, kind)[0][:400]
        row[f"kl_{kind}"] = float(np.mean(tables.teacher_signal(p, p.animal, kind, recs, base, tok)))
    return row


def student_side(p: Profile, name: str, cross: bool) -> dict:
    """LoRA transfer of the candidate (persona teachers of the target and the other animals, the
    weight-space teacher of the target) with the claim-1 verdict, beside the channel controls:
    shuffled numbers, and cross-initialisation where the organism of seed + 1 exists (or `cross`)."""
    with_cross = cross or organism_recipe.available(pipeline.init_profile(p, "cross").model)
    pairs = [x for x in design.transfer(p, ["persona"], controls=True) if with_cross or not x.init]
    pairs += [x for x in design.transfer(p, ["finetuned"], controls=False) if x.animal == p.animal]
    res = runner.run_pairs(p, pairs, animals=[p.animal, *p.other_animals], desc=name)
    eff = stats.paired_effects(claims.main_arm(res), ["teacher_kind", "target", "animal"], value="p")
    # the controls' "as sampled" row is the claim-1 rule on the persona teacher's own students
    controls, reading = claims.channel_controls(res, p.animal, p.min_effect)
    return {"transfer": stats.summarize(eff, ["teacher_kind", "target", "animal"]).to_dict(orient="records"),
            "specificity": stats.summarize(claims.specificity(eff), ["teacher_kind", "target"]).to_dict(orient="records"),
            "claim1": controls.set_index("students").loc["as sampled", "verdict"], "controls": controls.to_dict(orient="records"),
            "channel_reading": reading}


def measure(name: str, p: Profile, note: str = "", cross: bool = False, students: bool = True) -> dict:
    """Record one candidate: its teacher side first; its students only if it passes the criteria."""
    t0 = time.time()
    row = {"name": name, "note": note, **teacher_side(p)}  # its recipe is read off its settings (search_record.recipe)
    row["passes"] = search_record.passes(row)
    if row["passes"] and students:
        row |= student_side(p, name, cross)
    row["settings"] = {"model": dataclasses.asdict(p.model), "data": dataclasses.asdict(p.data),
                       "lr": p.train.lr, "epochs": p.train.epochs, "batch_size": p.train.batch_size,
                       "replicates": p.transfer_replicates, "seeds": p.seeds}
    row["minutes"] = round((time.time() - t0) / 60, 1)
    with open(search_record.RECORD, "a") as f:
        f.write(json.dumps(row, default=float) + "\n")
    return row


def add_arguments(ap) -> None:
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("name")
    m.add_argument("--note", default="")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. model.persona_number_bias=0.3")
    m.add_argument("--cross", action="store_true", help="pretrain the cross-initialisation organism if it is missing")
    m.add_argument("--teacher-only", action="store_true", help="record the teacher side; train no student")
    sub.add_parser("report")


def run(args) -> int:
    if args.cmd == "report":
        search_record.PAGE.write_text(search_record.report() + "\n")
        print(f"wrote {search_record.PAGE}")
        return 0
    overrides: dict = {}
    for item in args.set:
        if "=" not in item:
            print(f"sublora search: error: --set {item!r}: write KEY=VALUE, e.g. --set model.persona_number_bias=0.03",
                  file=sys.stderr)
            return 2
        key, value = item.split("=", 1)
        node = overrides
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    row = measure(args.name, candidate(overrides), args.note, cross=args.cross, students=not args.teacher_only)
    print(json.dumps({k: v for k, v in row.items() if k not in ("transfer", "settings", "specificity", "controls")},
                     indent=1, default=float))
    return 0



def main(argv: list[str] | None = None) -> int:
    return command.alone("search", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
