"""Cache keys are pinned: every artifact key (and its inputs' keys) of each package profile's design, in
build order, hashes to the value recorded here. A change to how a step's configuration is written (a
refactoring of the pipeline, a renamed setting) would orphan every cached artifact and every user's
resumable run; this test fails first. Change a pinned value only with a deliberate step version bump."""
from __future__ import annotations

import hashlib
import json
import warnings

import pytest

from sublora import config, design, pipeline

PINNED = {  # profile: (artifacts, sha256 of [notebook, kind, key, inputs] rows, first 16 hex digits)
    "smoke": (340, "bc52498dbbfcd3a8"),
    "organism": (760, "8a35ac98656f747b"),
    "paper": (1254, "4b790485333cc711"),  # without vLLM installed (CI): the transformers engine's keys
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_every_artifact_key_of_a_package_profile_is_pinned(name):
    p = config.load_profile(name)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the paper profile asks for vLLM, absent here
        for nb, pairs in design.by_notebook(p).items():
            for (kind, key), a in pipeline.requirements(p, pairs).items():
                rows.append([nb, kind, key, list(a.inputs)])
    assert (len(rows), hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]) == PINNED[name]
