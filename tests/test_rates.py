"""rates: the plan's throughput, each figure from a named measured anchor scaled by the model's FLOPs per token,
or measured by make bench / make gpu-check, or stated; and the paper plan's disk with weights dropped (issue 40)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from sublora import config, plan, rates


def test_flops_per_token_is_two_per_multiplying_parameter_plus_attention():
    s = rates.Shape(n_params=1000, layers=2, hidden=10, vocab=30, tied=False)
    assert s.flops_per_token(context=5) == 2 * (1000 - 300) + 2 * 2 * 5 * 10
    assert dataclasses.replace(s, tied=True).flops_per_token(context=5) == 2 * 1000 + 2 * 2 * 5 * 10


def test_the_paper_is_priced_at_the_anchors_and_smol_at_them_scaled_by_flops(tmp_cache):
    paper, smol = config.load_profile("paper"), config.load_profile("smol")
    got = rates.rates(paper)
    for kind, anchor in rates.ANCHORS.items():
        assert got[kind].source == "anchor" and got[kind].tps == pytest.approx(anchor.rate)
        assert "the anchor's own shape" in got[kind].how and not got[kind].upper_bound
    small = rates.rates(smol)
    ratio = rates.QWEN7B.flops_per_token() / rates.shape(smol).flops_per_token()
    assert 45 < ratio < 60  # 7.6B untied against 135M tied
    for kind, anchor in rates.ANCHORS.items():  # the two plans' arithmetic agrees: one anchor, one scale
        assert small[kind].tps == pytest.approx(anchor.rate * ratio)
        assert small[kind].upper_bound and f"x {ratio:,.3g}" in small[kind].how and anchor.where in small[kind].how
    text = plan.render(smol)
    assert "at least" in text and "upper bound" in text


def test_measured_figures_replace_the_anchors_bench_first(tmp_cache, tmp_path):
    smol = config.load_profile("smol")
    checked = tmp_path / "gpu-check.json"
    checked.write_text(json.dumps({"device": "NVIDIA H200", "rehearsal": False, "shape": dataclasses.asdict(rates.QWEN7B),
                                   "rates": {"lora_train_tps": 10000, "sample_tps": 3000}}))
    got = rates.rates(smol, gpu_check=checked)
    ratio = rates.QWEN7B.flops_per_token() / rates.shape(smol).flops_per_token()
    assert got["lora_train_tps"].source == "gpu-check" and got["lora_train_tps"].tps == pytest.approx(10000 * ratio)
    assert "NVIDIA H200" in got["lora_train_tps"].how
    assert got["full_train_tps"].source == "anchor"  # not measured there: the package's anchor
    checked.write_text(checked.read_text().replace('"rehearsal": false', '"rehearsal": true'))
    assert rates.rates(smol, gpu_check=checked)["lora_train_tps"].source == "anchor"  # a CPU rehearsal prices no GPU
    bench = tmp_path / "throughput_smol.json"
    bench.write_text(json.dumps({"lora_train_tps": 123.0, "device": "here"}))
    got = rates.rates(smol, bench=json.loads(bench.read_text()), gpu_check=checked)
    assert got["lora_train_tps"].source == "bench" and got["lora_train_tps"].tps == 123.0 and got["lora_train_tps"].measured


def test_a_cpu_profile_states_its_rates_and_one_without_them_or_a_shape_is_refused(tmp_cache):
    organism = config.load_profile("organism")
    assert {r.source for r in rates.rates(organism).values()} == {"stated"}
    bare = dataclasses.replace(organism, plan=dataclasses.replace(organism.plan, lora_train_tps=0.0))
    with pytest.raises(config.ConfigError, match="plan.lora_train_tps.*make bench"):
        rates.rates(bare)
    paper = config.load_profile("paper")
    shapeless = dataclasses.replace(paper, plan=dataclasses.replace(paper.plan, layers=0))
    with pytest.raises(config.ConfigError, match="no model shape"):
        rates.rates(shapeless)


def test_a_damaged_gpu_check_file_is_named(tmp_path):
    bad = tmp_path / "gpu-check.json"
    bad.write_text('{"rates": {}}')
    with pytest.raises(config.ConfigError, match="not a gpu-check results file.*make gpu-check"):
        rates.read_gpu_check(bad)


def test_the_paper_plan_fits_200_gb_with_weights_dropped_and_says_what_keeping_them_costs(tmp_cache, monkeypatch):
    paper = config.load_profile("paper")
    total = plan.Cost()
    for c in plan.count(paper).values():
        total.add(c)
    assert total.disk <= 200e9 < total.disk + total.dropped
    text = plan.render(paper)
    assert "SUBLORA_KEEP_WEIGHTS=1" in text and plan.size(total.disk + total.dropped) in text
    monkeypatch.setenv("SUBLORA_KEEP_WEIGHTS", "1")
    kept = plan.Cost()
    for c in plan.count(paper).values():
        kept.add(c)
    assert kept.dropped == 0 and kept.disk == pytest.approx(total.disk + total.dropped)
