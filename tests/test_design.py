"""design: what each claim notebook trains, as teacher/control pairs."""
from __future__ import annotations

from sublora import config, design


def test_system_prompt_design_is_the_authors_grid():
    smoke = config.load_profile("smoke")
    pairs = design.system_prompt(smoke, "persona")
    cells = {(x.spec.train_system, e) for x in pairs if x.label.startswith("train ") for e in x.eval_systems}
    grid = {(t, e) for t in ("default", "empty", "chatgpt") for e in ("default", "empty", "chatgpt")}
    assert grid <= cells and ("zymthar", "zymthar") in cells and ("default", "none") in cells
