"""The examples in the engine's docstrings are hand-computed answers: run them."""

import doctest

import numpy as np
import pytest

import cvlm.cyclic
import cvlm.explain
import cvlm.frames
import cvlm.readout
import cvlm.validate
from cvlm.validate import edit_specificity


@pytest.mark.parametrize("module", [cvlm.readout, cvlm.frames, cvlm.cyclic, cvlm.explain, cvlm.validate])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result


def test_specificity_is_own_change_over_the_change_another_removal_makes_there():
    own_a = np.zeros((4, 4), bool)
    own_a[:2] = True
    own_b = ~own_a
    masks = {(0, "A"): own_a, (0, "B"): own_b, (1, "A"): own_a}
    changes = {
        (0, "A"): np.where(own_a, 0.6, 0.1),  # removing A changes A's pixels by 0.6
        (0, "B"): np.where(own_a, 0.2, 0.5),  # removing B changes A's pixels by 0.2
        (1, "A"): np.ones((4, 4)),  # alone in its image: no control, not counted
    }
    ratio, n = edit_specificity([(0, "A"), (0, "B"), (1, "A")], changes, masks)
    assert n == {"A": 1, "B": 1}, n
    assert ratio["A"] == pytest.approx(0.6 / 0.2) and ratio["B"] == pytest.approx(0.5 / 0.1), ratio
