"""Loss and pseudo-Dice counts against nnunetv2's own (fixtures: tests/fixtures/make_loss.py)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnseg_nb.dataset import LabelInfo
from nnseg_nb.loss import (
    DeepSupervisionLoss,
    DiceBCELoss,
    DiceCELoss,
    build_loss,
    label_onehot,
    soft_dice_loss,
    tp_fp_fn,
)

FIXTURES = Path(__file__).parent / "fixtures" / "loss"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["cases"]
ARRAYS = np.load(FIXTURES / "inputs.npz")


def case_inputs(name):
    case = EXPECTED[name]
    if not case["deep_supervision"]:
        return torch.from_numpy(ARRAYS[f"{name}__logits"]), torch.from_numpy(ARRAYS[f"{name}__target"])
    outputs = [torch.from_numpy(ARRAYS[f"{name}__logits_{i}"]) for i in range(case["n_outputs"])]
    targets = [torch.from_numpy(ARRAYS[f"{name}__target_{i}"]) for i in range(case["n_outputs"])]
    return outputs, targets


def case_loss(name):
    case = EXPECTED[name]
    labels = LabelInfo.from_dataset_json(case)
    return build_loss(labels, case["batch_dice"], case["deep_supervision"], case["n_outputs"]), labels


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_matches_nnunet(name):
    loss_fn, _ = case_loss(name)
    outputs, targets = case_inputs(name)
    assert float(loss_fn(outputs, targets)) == pytest.approx(EXPECTED[name]["loss"], abs=1e-6, rel=1e-6)


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if f"{n}__grad" in ARRAYS))
def test_gradient_matches_nnunet(name):
    loss_fn, _ = case_loss(name)
    outputs, targets = case_inputs(name)
    if isinstance(outputs, list):
        outputs = [o.clone().requires_grad_(True) for o in outputs]
        first = outputs[0]
    else:
        outputs = first = outputs.clone().requires_grad_(True)
    loss_fn(outputs, targets).backward()
    np.testing.assert_allclose(first.grad.numpy(), ARRAYS[f"{name}__grad"], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tp_fp_fn_matches_nnunet(name):
    _, labels = case_loss(name)
    outputs, targets = case_inputs(name)
    before = [t.clone() for t in targets] if isinstance(targets, list) else targets.clone()
    tp, fp, fn = tp_fp_fn(outputs, targets, labels)
    assert (tp.tolist(), fp.tolist(), fn.tolist()) == tuple(EXPECTED[name][k] for k in ("tp", "fp", "fn"))
    # nnU-Net overwrites the ignore label in the caller's target; we leave it as it was
    for a, b in zip(
        before if isinstance(before, list) else [before], targets if isinstance(targets, list) else [targets]
    ):
        assert torch.equal(a, b)


def test_deep_supervision_weights_match_nnunet():
    for name, case in EXPECTED.items():
        if case["deep_supervision"]:
            loss_fn, _ = case_loss(name)
            assert loss_fn.weights == pytest.approx(case["loss_weights"], abs=1e-15)


def test_ddp_without_compile_gives_the_coarsest_output_a_tiny_weight():
    labels = LabelInfo.from_dataset_json({"labels": {"background": 0, "a": 1}})
    assert build_loss(labels, True, True, 3, ddp=True).weights[-1] == pytest.approx(1e-6 / (1.5 + 1e-6))
    assert build_loss(labels, True, True, 3, ddp=True, compiled=True).weights[-1] == 0.0
    assert isinstance(build_loss(labels, True, False, 3), DiceCELoss)


def test_builder_picks_the_region_loss_and_its_ignore_channel():
    regions = {"background": 0, "whole": [1, 2], "core": 2}
    plain = LabelInfo.from_dataset_json({"labels": regions, "regions_class_order": [1, 2]})
    assert (
        isinstance(build_loss(plain, False, False, 1), DiceBCELoss)
        and not build_loss(plain, 0, 0, 1).has_ignore_label
    )
    info = LabelInfo.from_dataset_json({"labels": {**regions, "ignore": 3}, "regions_class_order": [1, 2]})
    loss = build_loss(info, False, False, 1)
    assert isinstance(loss, DiceBCELoss) and loss.has_ignore_label


def test_perfect_prediction_reaches_minus_one_dice():
    target = torch.tensor([[[0, 1, 2, 1]]])
    probabilities = label_onehot(target, 3)
    assert float(soft_dice_loss(probabilities[:, 1:], probabilities[:, 1:])) == pytest.approx(-1.0)
    # an absent class scores 1 thanks to the smoothing term, not 0/0
    absent = label_onehot(torch.tensor([[[0, 1, 1, 1]]]), 3)
    assert float(soft_dice_loss(absent[:, 1:], absent[:, 1:])) == pytest.approx(-1.0)


def test_ignored_voxels_change_nothing():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 1, 6, 6))
    with_ignore = target.clone()
    with_ignore[:, :, :2] = 3
    logits_changed = logits.clone()
    logits_changed[:, :, :2] = torch.randn(2, 3, 2, 6) * 10  # anything in ignored voxels
    loss = DiceCELoss(batch_dice=True, ignore_label=3)
    assert float(loss(logits, with_ignore)) == pytest.approx(
        float(loss(logits_changed, with_ignore)), abs=1e-6
    )


def test_wrong_target_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\)"):
        DiceCELoss(False)(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="ignore channel"):
        DiceBCELoss(False, has_ignore_label=True)(
            torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="non-zero"):
        DeepSupervisionLoss(DiceCELoss(False), [0.0, 0.0])
    with pytest.raises(ValueError, match="expects 2 outputs"):
        DeepSupervisionLoss(DiceCELoss(False), [1.0, 0.0])([torch.zeros(1, 2, 4)], [torch.zeros(1, 1, 4)])


DDP_WORKER = """
import sys, torch, torch.distributed as dist
from nnseg_nb.loss import DiceCELoss, label_onehot, soft_dice_loss
dist.init_process_group("gloo")
rank = dist.get_rank()
logits, target = torch.load(sys.argv[1])
logits, target = logits[2 * rank : 2 * rank + 2].clone().requires_grad_(True), target[2 * rank : 2 * rank + 2]
mask = target != 3
onehot = label_onehot(torch.where(mask, target, 0), 3)
dice = soft_dice_loss(torch.softmax(logits, 1)[:, 1:], onehot[:, 1:], mask, batch_dice=True, ddp=True)
dice.backward()
total = DiceCELoss(batch_dice=True, ignore_label=3, ddp=True)(logits, target)
torch.save((dice.detach(), logits.grad, total.detach()), sys.argv[2] + f"/rank{rank}.pt")
dist.destroy_process_group()
"""


def test_batch_dice_under_ddp_sums_over_ranks(tmp_path):
    """Two gloo ranks with two samples each give the batch Dice of all four samples in one process.

    Each rank's gradient is world size x its share of the one-process gradient: DDP averages the
    parameter gradients over ranks, which gives back the one-process gradient (as in nnU-Net).
    """
    torch.manual_seed(0)
    logits, target = torch.randn(4, 3, 5, 6), torch.randint(0, 4, (4, 1, 5, 6))
    torch.save((logits, target), tmp_path / "inputs.pt")
    (tmp_path / "worker.py").write_text(DDP_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    command = [sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "inputs.pt"), str(tmp_path)]
    workers = [
        subprocess.Popen(command, env={**env, "RANK": str(rank), "OMP_NUM_THREADS": "1"}) for rank in range(2)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]

    full = logits.clone().requires_grad_(True)
    mask = target != 3
    onehot = label_onehot(torch.where(mask, target, 0), 3)
    dice = soft_dice_loss(torch.softmax(full, 1)[:, 1:], onehot[:, 1:], mask, batch_dice=True)
    dice.backward()
    for rank in range(2):
        mine = slice(2 * rank, 2 * rank + 2)
        rank_dice, rank_grad, rank_total = torch.load(tmp_path / f"rank{rank}.pt")
        assert float(rank_dice) == pytest.approx(float(dice.detach()), abs=1e-6)
        torch.testing.assert_close(rank_grad, 2 * full.grad[mine], atol=1e-7, rtol=1e-5)
        # the CE term stays each rank's own mean
        ce = F.cross_entropy(logits[mine], target[mine, 0], ignore_index=3)
        assert float(rank_total) == pytest.approx(float(ce + dice.detach()), abs=1e-6)
