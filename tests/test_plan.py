"""plan: full fine-tuning priced per precision arm, at the rate make bench measured for each arm."""
from __future__ import annotations

import pytest

from sublora import config, params, plan


def test_full_fine_tuning_is_priced_per_arm_at_each_arms_measured_rate():
    smoke = config.load_profile("smoke")  # two arms: fp32-master and bf16
    total = plan.Cost()
    for c in plan.count(smoke).values():
        total.add(c)
    assert set(total.full_by_arm) == {"fp32-master", "bf16"}
    assert sum(total.full_by_arm.values()) == pytest.approx(total.trained_full)
    stated = {"sample_tps": 1.0, "lora_train_tps": 1.0, "full_train_tps": 100.0, "eval_fwd_tps": 1.0}
    measured = stated | {"full_bf16_train_tps": 10.0}  # the bf16 arm ten times slower than the main arm
    terms = {what: (tokens, rate) for what, tokens, rate in total.terms(measured)}
    assert terms["full FT fp32-master"][1] == 100.0 and terms["full FT bf16"][1] == 10.0
    slower = total.hours(measured) - total.hours(stated)
    assert slower == pytest.approx(total.full_by_arm["bf16"] * (1 / 10 - 1 / 100) / 3600)


def test_a_run_far_costlier_than_its_profile_stops_before_any_work(monkeypatch):
    smoke = config.load_profile("smoke")
    plan.check_cost(params.notebook_profile({"profile": "smoke", "prompts": 128}, "01_teacher_numbers"), smoke)
    huge = params.notebook_profile({"profile": "smoke", "prompts": 100_000}, "01_teacher_numbers")
    with pytest.raises(config.ConfigError, match=r"x the profile's default .*SUBLORA_ALLOW_EXPENSIVE=1"):
        plan.check_cost(huge, smoke)
    monkeypatch.setenv("SUBLORA_ALLOW_EXPENSIVE", "1")
    plan.check_cost(huge, smoke)
