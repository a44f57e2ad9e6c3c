"""The examples in the engine's docstrings are hand-computed answers: run them."""

import doctest

import numpy as np
import pytest

import cvlm.counterfactual
import cvlm.cyclic
import cvlm.diffusion.card
import cvlm.evaluate
import cvlm.explain
import cvlm.frames
import cvlm.readout
import cvlm.validate
from cvlm.validate import edit_specificity


@pytest.mark.parametrize(
    "module",
    [
        cvlm.readout,
        cvlm.frames,
        cvlm.counterfactual,
        cvlm.cyclic,
        cvlm.evaluate,
        cvlm.explain,
        cvlm.validate,
        cvlm.diffusion.card,
    ],
)
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


def test_smaller_masks_are_subsets_and_keep_each_region_to_its_strongest_edit():
    import torch

    from cvlm.counterfactual import core_masks, keep_others

    masks = torch.zeros(3, 1, 4, 4)
    masks[0, 0, :, :3] = 1  # edit 0: columns 0-2
    masks[1, 0, :, 1:] = 1  # edit 1: columns 1-3 (overlaps edit 0 on columns 1-2)
    masks[2, 0, 0, 0] = 1  # edit 2: one pixel, inside edit 0's region
    responses = torch.zeros(3, 4, 4)
    responses[0] = torch.tensor([4.0, 3.0, 1.0, 0.0])  # edit 0 answers most on the left
    responses[1] = torch.tensor([0.0, 1.0, 3.0, 4.0])  # edit 1 most on the right
    responses[2, 0, 0] = 1.0  # edit 2's only pixel is its own maximum
    kept = keep_others(masks, responses)
    cores = core_masks(masks, responses)
    for name, cut in (("keep", kept), ("core", cores)):
        assert bool((cut <= masks).all()), (name, cut[:, 0])
        assert all(cut[k].sum() > 0 for k in range(3)), (name, cut[:, 0])
    # Column 1: edit 0 at 3/4 of its maximum beats edit 1 at 1/4 of its; column 2 the other way round.
    # Pixel (0, 0) is the maximum of edits 0 and 2 alike: a tie is shared, not taken from either.
    assert kept[0, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0], kept[0, 0]
    assert kept[0, 0, 1].tolist() == [1.0, 1.0, 0.0, 0.0], kept[0, 0]
    assert kept[2, 0].sum() == 1, kept[2, 0]
    assert kept[1, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0], kept[1, 0]
    assert cores[0, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0], cores[0, 0]
    assert cores[1, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0], cores[1, 0]
    # A single edit has no others to leave alone.
    assert torch.equal(keep_others(masks[:1], responses[:1]), masks[:1])
