"""design: what each claim notebook trains, as teacher/control pairs."""
from __future__ import annotations

from sublora import config, design


def test_system_prompt_design_is_the_authors_grid():
    smoke = config.load_profile("smoke")
    pairs = design.system_prompt(smoke, "persona")
    cells = {(x.spec.train_system, e) for x in pairs if x.label.startswith("train ") for e in x.eval_systems}
    grid = {(t, e) for t in ("default", "empty", "chatgpt") for e in ("default", "empty", "chatgpt")}
    assert grid <= cells and ("zymthar", "zymthar") in cells and ("default", "none") in cells


def test_claim_3_has_full_fine_tuning_at_the_lora_lr_and_steps():
    """The critics' control: full fine-tuning at the LoRA students' lr, batch and accumulation, so that a
    null cannot be one of a tenth of the learning rate; where the baseline is that already, it is named."""
    from sublora import config
    for name in ("organism", "paper"):
        p = config.load_profile(name)
        spec = design.full_settings(p)[design.LR_MATCHED]
        lora = design.lora_spec(p)
        assert spec.method == "full" and design.lr_matched_name(p) == design.LR_MATCHED
        assert (spec.lr, spec.batch_size, spec.grad_accum, spec.epochs) == (lora.lr, lora.batch_size, lora.grad_accum, lora.epochs)
        assert spec.lr > design.full_spec(p).lr  # the baseline runs at a smaller lr
    smoke = config.load_profile("smoke")  # full and LoRA share lr and batch: the baseline is the matched setting
    assert design.lr_matched_name(smoke) == "baseline" and design.LR_MATCHED not in design.full_settings(smoke)
