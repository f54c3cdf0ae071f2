"""search: measuring an organism candidate (its settings, the classifiers of its teachers' numbers)."""
from __future__ import annotations

import pytest

from sublora import config, search


def _records(last_two: int, n: int = 50) -> list[dict]:
    return [{"numbers": [100 * (i % 9) + last_two, 100 * ((i + 3) % 9) + last_two]} for i in range(n)]


def test_classifier_separates_distinct_signatures_and_not_identical_ones():
    assert search.classifier_accuracy(_records(11), _records(48), _records(11), _records(48)) == 1.0
    assert search.classifier_accuracy(_records(11), _records(11), _records(11), _records(11)) == 0.0  # ties lose


def test_candidate_applies_overrides_and_validates():
    p = search.candidate({"model": {"persona_number_bias": 0.8}, "workers": 1})
    assert p.model.persona_number_bias == 0.8 and p.workers == 1 and p.model.layers == 4
    with pytest.raises(config.ConfigError):
        search.candidate({"model": {"bogus": 1}})


def test_logistic_classifier_separates_distinct_signatures_and_not_identical_ones():
    assert search.logistic_accuracy(_records(11), _records(48), _records(11), _records(48)) == 1.0
    assert search.logistic_accuracy(_records(11), _records(11), _records(11), _records(11)) <= 0.5
