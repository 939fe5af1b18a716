"""The paired standard error both publish gates allow: exact values and its guard."""
from __future__ import annotations

import math

import pytest

from rlhf.common.paired import paired_standard_error


def test_paired_standard_error_exact():
    assert paired_standard_error([1.0, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]) == pytest.approx(math.sqrt(1.25) / 4)
    assert paired_standard_error([0.3, 0.7], [0.3, 0.7]) == 0.0  # the same measurement: no slack
    assert paired_standard_error([], []) == 0.0


def test_paired_standard_error_needs_the_same_items():
    with pytest.raises(ValueError, match="same items: 2 against 3"):
        paired_standard_error([1.0, 0.0], [1.0, 0.0, 1.0])
