"""Batched augmentation: probabilities, ranges, invariants, geometry, and parity with batchgeneratorsv2.

Parity values come from tests/fixtures/augment/ (made by tests/fixtures/make_augment.py with nnunetv2).
"""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from nnseg_nb import augment as A
from nnseg_nb import network
from nnseg_nb.augment import intensity as A_intensity
from nnseg_nb.augment import spatial as A_spatial
from nnseg_nb.preprocessing import OUTSIDE_LABEL

FIXTURES = Path(__file__).parent / "fixtures" / "augment"
N = 4000  # samples for the probability checks: 4 sigma of a fraction is at most 4 * sqrt(.25 / N) = 0.032


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_fraction(mask: torch.Tensor, p: float) -> None:
    fraction = mask.double().mean().item()
    assert abs(fraction - p) <= 4 * math.sqrt(p * (1 - p) / mask.numel()) + 1e-12, (fraction, p)


def shape_only(b: int = N, c: int = 2, spatial=(2, 2, 2)) -> dict:
    return {"image": torch.empty(b, c, *spatial)}


def blobs(shape, labels=(1, 2), seed=0) -> torch.Tensor:
    """(1, *shape) int16 label map of a few ellipsoids, -1 in the first slab (like outside the mask)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    seg = np.zeros(shape, np.int16)
    for label in labels:
        for _ in range(3):
            center, radii = rng.uniform(0, shape), rng.uniform(2, max(shape) / 3, len(shape))
            seg[sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii)) < 1] = label
    seg[:1] = -1
    return torch.from_numpy(seg)[None]


def no_augmentation() -> A.AugmentSettings:
    zero = {f.name: 0.0 for f in dataclasses.fields(A.AugmentSettings) if f.name.startswith("p_")}
    return A.AugmentSettings(**zero)


# ---------------------------------------------------------------------------------------------------------
# configuration helpers
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patch, expected",
    [
        ((40, 56, 40), (73, 80, 64)),
        ((128, 128, 128), (205, 205, 205)),
        ((20, 320, 256), (20, 376, 376)),
        ((56, 40), (65, 65)),
    ],
)
def test_loaded_patch_size_reference_examples(patch, expected):
    rotation, dummy_2d, _ = A.rotation_and_mirroring_for(patch)
    assert A.loaded_patch_size(patch, rotation, dummy_2d=dummy_2d) == expected


@pytest.mark.skipif(not (FIXTURES / "initial_patch_sizes.npz").exists(), reason="no fixture")
def test_loaded_patch_size_matches_nnunet_fixture():
    cases = np.load(FIXTURES / "initial_patch_sizes.npz", allow_pickle=False)
    for patch, expected in zip(cases["patch_sizes"], cases["initial_patch_sizes"]):
        patch = tuple(int(i) for i in patch if i > 0)
        rotation, dummy_2d, _ = A.rotation_and_mirroring_for(patch)
        assert A.loaded_patch_size(patch, rotation, dummy_2d=dummy_2d) == tuple(
            int(i) for i in expected[: len(patch)]
        )


def test_rotation_and_mirroring_rules():
    deg = math.pi / 180
    assert A.rotation_and_mirroring_for((64, 160)) == (pytest.approx((-15 * deg, 15 * deg)), False, (0, 1))
    assert A.rotation_and_mirroring_for((64, 96)) == (pytest.approx((-180 * deg, 180 * deg)), False, (0, 1))
    assert A.rotation_and_mirroring_for((96, 96, 96)) == (
        pytest.approx((-30 * deg, 30 * deg)),
        False,
        (0, 1, 2),
    )
    assert A.rotation_and_mirroring_for((20, 320, 256))[1:] == (True, (0, 1, 2))
    assert A.rotation_and_mirroring_for((32, 96, 96))[1] is False  # max / patch[0] must exceed 3
    with pytest.raises(ValueError, match="2 or 3 axes"):
        A.rotation_and_mirroring_for((8,))


def test_deep_supervision_scales():
    scales = network.deep_supervision_scales([[1, 1], [2, 2], [2, 2], [2, 1]])
    assert scales == [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]]


# ---------------------------------------------------------------------------------------------------------
# parameters: probabilities and ranges
# ---------------------------------------------------------------------------------------------------------


def test_bg_contrast_halves_and_ranges():
    factors = A.bg_contrast((0.75, 1.25), (N,), gen())
    below = factors < 1
    assert_fraction(below, 0.5)
    assert factors[below].min() >= 0.75 and factors[~below].max() <= 1.25 and factors[~below].min() >= 1
    assert factors[below].mean() == pytest.approx(0.875, abs=0.01)  # uniform within each half
    assert factors[~below].mean() == pytest.approx(1.125, abs=0.01)
    above_one = A.bg_contrast((1.2, 2.0), (N,), gen())  # low >= 1: only the upper branch exists
    assert above_one.min() >= 1.2 and above_one.max() <= 2.0


def test_spatial_parameters():
    t = A.SpatialTransform((2, 2, 2), rotation_range=(-0.5, 0.5))
    params = t.sample(shape_only(), gen())
    assert_fraction(params["rotate"], 0.2)
    assert_fraction(params["scale"], 0.2)
    assert_fraction(params["rotate"] | params["scale"], 0.36)
    angles, scales = params["angles"], params["scales"]
    assert angles.shape == (N, 3) and (angles[~params["rotate"]] == 0).all()
    rotated = angles[params["rotate"]]
    assert rotated.abs().max() <= 0.5 and rotated.abs().max() > 0.45  # fills the range
    assert abs(np.corrcoef(rotated[:, 0], rotated[:, 1])[0, 1]) < 0.15  # independent axes
    assert (scales[~params["scale"]] == 1).all()
    assert scales[params["scale"]].min() >= 0.7 and scales[params["scale"]].max() <= 1.4
    for in_plane in (
        A.SpatialTransform((2, 2)).sample(shape_only(spatial=(2, 2)), gen()),
        A.SpatialTransform((2, 2, 2), dummy_2d=True).sample(shape_only(), gen()),
    ):
        assert in_plane["angles"].shape == (N, 1) and in_plane["affine"].shape[1:] == (2, 2)


def test_affine_is_rz_ry_rx_s():
    angles, scales = (
        torch.tensor([[0.3, -0.2, 0.7]], dtype=torch.float64),
        torch.tensor([1.3], dtype=torch.float64),
    )
    (x, y, z), s = angles[0].tolist(), 1.3
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    expected = rz @ ry @ rx @ np.diag([s, s, s])
    np.testing.assert_allclose(
        A_spatial._rotation_scaling_matrices(angles, scales)[0].numpy(), expected, atol=1e-12
    )


@pytest.mark.parametrize(
    "transform, p",
    [
        (A.GaussianNoise(), 0.1),
        (A.GaussianBlur(), 0.2),
        (A.MultiplicativeBrightness(), 0.15),
        (A.Contrast(), 0.15),
        (A.SimulateLowResolution(), 0.25),
        (A.Gamma(p=0.1, invert=True), 0.1),
        (A.Gamma(), 0.3),
        (A.RandomBinaryOperator(2), 0.4),
        (A.RemoveRandomConnectedComponent(2), 0.2),
    ],
)
def test_probability_of_application(transform, p):
    params = transform.sample(shape_only(), gen())
    assert_fraction(params["applied"], p)
    if "channels" in params or "chosen" in params:
        assert_fraction(params.get("channels", params.get("chosen")), 0.5)


def test_intensity_parameter_ranges():
    batch = shape_only()
    assert A.GaussianNoise().sample(batch, gen())["std"].min() >= 0
    assert A.GaussianNoise().sample(batch, gen())["std"].max() <= 0.1
    sigmas = A.GaussianBlur().sample(batch, gen())["sigmas"]
    assert sigmas.shape == (N, 2, 3) and sigmas.min() >= 0.5 and sigmas.max() <= 1.0
    zooms = A.SimulateLowResolution().sample(batch, gen())["zooms"]
    assert zooms.shape == (N, 2) and zooms.min() >= 0.5 and zooms.max() <= 1.0
    for t, key, low, high in [
        (A.MultiplicativeBrightness(), "multipliers", 0.75, 1.25),
        (A.Contrast(), "factors", 0.75, 1.25),
        (A.Gamma(), "gammas", 0.7, 1.5),
    ]:
        values = t.sample(batch, gen())[key]
        assert values.min() >= low and values.max() <= high
        assert_fraction(values < 1, 0.5)  # BGContrast


def test_binary_operator_parameters():
    params = A.RandomBinaryOperator(3).sample(shape_only(c=4), gen())
    assert (params["order"].sort(1).values == torch.arange(3)).all()  # a permutation per sample
    assert_fraction(params["order"][:, 0] == 0, 1 / 3)
    assert_fraction(params["operators"] == 2, 0.25)
    assert params["radii"].min() >= 1 and params["radii"].max() <= 8


def test_mirror_parameters_are_per_sample_and_axis():
    flips = A.Mirror((0, 2)).sample(shape_only(), gen())["flips"]
    assert_fraction(flips[:, [0, 2]], 0.5)
    assert not flips[:, 1].any()
    assert_fraction(flips[:, 0] & flips[:, 2], 0.25)  # independent


def test_applied_samples_are_exactly_the_changed_ones():
    image = torch.rand(400, 1, 6, 6, generator=gen(1)) + 0.5
    for t in (A.GaussianNoise(), A.MultiplicativeBrightness(), A.Contrast(), A.Gamma()):
        params = t.sample({"image": image}, gen(2))
        changed = (t.apply({"image": image}, params)["image"] != image).flatten(1).any(1)
        assert torch.equal(changed, params["applied"]), type(t).__name__


# ---------------------------------------------------------------------------------------------------------
# spatial
# ---------------------------------------------------------------------------------------------------------


def spatial_params(angles, scale, warp=True):
    angles = torch.tensor([angles], dtype=torch.float64)
    scales = torch.tensor([scale], dtype=torch.float64)
    return {
        "rotate": torch.tensor([warp]),
        "scale": torch.tensor([False]),
        "angles": angles,
        "scales": scales,
        "affine": A_spatial._rotation_scaling_matrices(angles, scales),
    }


@pytest.mark.parametrize(
    "loaded, patch", [((10, 12, 14), (6, 8, 8)), ((9, 12, 13), (6, 7, 8)), ((8, 9), (5, 6))]
)
def test_spatial_without_warp_is_center_crop(loaded, patch):
    image = torch.randn(3, 2, *loaded)
    seg = torch.randint(-1, 3, (3, 1, *loaded))
    out = A.SpatialTransform(patch, p_rotation=0, p_scaling=0)({"image": image, "seg": seg}, gen())
    box = tuple(slice(s // 2 - p // 2, s // 2 - p // 2 + p) for s, p in zip(loaded, patch))
    assert torch.equal(out["image"], image[(..., *box)]) and torch.equal(out["seg"], seg[(..., *box)])


def test_spatial_crop_pads_image_with_zero_and_seg_with_minus_one():
    out = A.SpatialTransform((6, 6), p_rotation=0, p_scaling=0)(
        {"image": torch.ones(1, 1, 4, 6), "seg": torch.ones(1, 1, 4, 6, dtype=torch.int16)}, gen()
    )
    assert out["image"][0, 0, :, 0].tolist() == [0, 1, 1, 1, 1, 0]
    assert out["seg"][0, 0, :, 0].tolist() == [-1, 1, 1, 1, 1, -1]


def test_spatial_zero_rotation_unit_scale_through_the_grid_equals_crop():
    image, seg = torch.randn(1, 2, 10, 12, 14), torch.randint(-1, 3, (1, 1, 10, 12, 14))
    out = A.SpatialTransform((6, 8, 8)).apply({"image": image, "seg": seg}, spatial_params([0, 0, 0], 1.0))
    box = (..., slice(2, 8), slice(2, 10), slice(3, 11))
    torch.testing.assert_close(out["image"], image[box], atol=1e-5, rtol=0)
    assert torch.equal(out["seg"], seg[box])


@pytest.mark.parametrize("size", [9, 10])
@pytest.mark.parametrize("axis, k, dims", [(0, -1, (3, 4)), (1, 1, (2, 4)), (2, -1, (2, 3))])
def test_spatial_90_degrees_is_rot90(size, axis, k, dims):
    # output(p) = input(R p): about axis 0 a point (y, x) reads (-x, y), i.e. rot90 with k=-1 over (Y, X)
    image, seg = torch.randn(1, 1, size, size, size), torch.randint(0, 4, (1, 1, size, size, size))
    angles = [0.0, 0.0, 0.0]
    angles[axis] = math.pi / 2
    out = A.SpatialTransform((size,) * 3).apply({"image": image, "seg": seg}, spatial_params(angles, 1.0))
    torch.testing.assert_close(out["image"], torch.rot90(image, k, dims), atol=1e-5, rtol=0)
    assert torch.equal(out["seg"], torch.rot90(seg, k, dims))


def test_spatial_2d_rotation_and_scaling_geometry():
    image = torch.zeros(1, 1, 21, 21)
    image[0, 0, 10, 14] = 1  # 4 voxels right of the center
    out = A.SpatialTransform((21, 21)).apply({"image": image}, spatial_params([math.pi / 2], 1.0))
    assert out["image"][0, 0].argmax().item() == 14 * 21 + 10  # output (y, x) reads input R (y, x) = (-x, y)
    zoomed = A.SpatialTransform((21, 21)).apply({"image": image}, spatial_params([0.0], 2.0))
    assert zoomed["image"][0, 0].argmax().item() == 10 * 21 + 12  # scale 2 zooms out: half the distance


def nnunet_style_labels(seg: torch.Tensor, centered: list[torch.Tensor]) -> torch.Tensor:
    """batchgeneratorsv2 0.3.6's seg sampling, rewritten: one grid_sample per label mask (x1000, float16),
    the outside counted as label -1, running argmax (ties to the lower label), then the nearest neighbour's
    label wherever its score equals the top one."""
    spatial = seg.shape[2:]
    grid = torch.stack([c / (s / 2) for c, s in zip(centered, spatial)][::-1], -1)
    nearest = (F.grid_sample(seg.float() + 1, grid, mode="nearest", align_corners=False) - 1).to(seg.dtype)
    result, best, nearest_score = None, None, None
    for label in torch.unique(torch.cat([seg.flatten(), torch.tensor([-1], dtype=seg.dtype)])).tolist():
        outside = 1.0 if label == -1 else 0.0  # sample (mask - outside) with zeros padding, add it back
        mask = ((seg == label).float() - outside) * 1000
        score = (F.grid_sample(mask, grid, align_corners=False) + 1000 * outside).half()
        nearest_score = torch.where(nearest == label, score, nearest_score if best is not None else -math.inf)
        if best is None:
            result, best = torch.full(score.shape, label, dtype=seg.dtype), score
        else:
            result[score > best] = label
            best = torch.maximum(best, score)
    return torch.where(nearest_score == best, nearest, result)


@pytest.mark.parametrize("spatial, patch", [((30, 34, 32), (20, 24, 22)), ((40, 44), (30, 32))])
def test_label_sampling_matches_per_label_interpolation(spatial, patch):
    seg = torch.stack([blobs(spatial, labels=(1, 2, 3), seed=s) for s in range(3)])
    t = A.SpatialTransform(patch, rotation_range=(-1.0, 1.0), p_rotation=1, p_scaling=1)
    params = t.sample({"image": seg.float()}, gen(3))
    centered = A_spatial._centered_coordinates(params["affine"], patch, seg.float())
    ours = A_spatial._sample_labels(seg, [0, 1, 2], params["affine"], patch)
    reference = nnunet_style_labels(seg, centered)
    assert (ours != reference).float().mean() < 2e-4  # float rounding may flip a near-tie, nothing more
    assert set(torch.unique(ours).tolist()) <= {-1, 0, 1, 2, 3}


def test_spatial_seg_stays_in_label_set_and_marks_outside():
    seg = blobs((24, 24, 24))[None].repeat(4, 1, 1, 1, 1)
    t = A.SpatialTransform((24, 24, 24), p_rotation=1, p_scaling=1, scaling_range=(1.3, 1.4))
    out = t({"image": seg.float(), "seg": seg}, gen())
    assert set(torch.unique(out["seg"]).tolist()) <= {-1, 0, 1, 2}
    assert (out["seg"][:, :, 0, 0, 0] == -1).all()  # zoomed out: the corners read from outside
    assert (out["image"][:, :, 0, 0, 0] == 0).all()


def test_spatial_outside_is_label_minus_one_beyond_half_a_voxel():
    seg = torch.ones(1, 1, 1, 10, dtype=torch.int16)  # a 1 x 10 strip, voxel centers 0..9
    t = A.SpatialTransform((1, 10))
    # scale 1.1 reads x = 4.5 + 1.1 * (-4.5 ... 4.5) = -0.45 ... 9.45: less than half a voxel out
    assert (
        t.apply({"image": seg.float(), "seg": seg}, spatial_params([0.0], 1.1))["seg"].flatten().tolist()
        == [1] * 10
    )
    # scale 1.2 reads -0.9 ... 9.9: the end points are mostly padding
    out = t.apply({"image": seg.float(), "seg": seg}, spatial_params([0.0], 1.2))["seg"].flatten().tolist()
    assert out == [-1] + [1] * 8 + [-1]


def test_spatial_dummy_2d_warps_every_slice_alike():
    image, seg = torch.randn(2, 2, 3, 20, 22), blobs((3, 20, 22))[None].repeat(2, 1, 1, 1, 1)
    t3 = A.SpatialTransform((3, 14, 16), rotation_range=(-3.0, 3.0), p_rotation=1, p_scaling=1, dummy_2d=True)
    params = t3.sample({"image": image}, gen())
    out = t3.apply({"image": image, "seg": seg}, params)
    assert out["image"].shape == (2, 2, 3, 14, 16) and out["seg"].shape == (2, 1, 3, 14, 16)
    t2 = A.SpatialTransform((14, 16))
    for z in range(3):
        per_slice = t2.apply({"image": image[:, :, z], "seg": seg[:, :, z]}, params)
        torch.testing.assert_close(out["image"][:, :, z], per_slice["image"])
        assert torch.equal(out["seg"][:, :, z], per_slice["seg"])


@pytest.mark.skipif(not (FIXTURES / "spatial.npz").exists(), reason="no fixture")
def test_spatial_matches_batchgeneratorsv2():
    """Same affine as batchgeneratorsv2 drew -> the same patch (image to float tolerance, seg exactly)."""
    cases = np.load(FIXTURES / "spatial.npz")
    for i in range(int(cases["count"])):
        image, seg = torch.from_numpy(cases[f"image_{i}"]), torch.from_numpy(cases[f"seg_{i}"])
        patch, dummy_2d = tuple(cases[f"patch_{i}"].tolist()), bool(cases[f"dummy_2d_{i}"])
        affine = torch.from_numpy(cases[f"affine_{i}"])[None]
        warped = bool(affine.abs().sum() > 0)
        params = {
            "rotate": torch.tensor([warped]),
            "scale": torch.tensor([False]),
            "affine": affine if warped else torch.eye(len(patch) - dummy_2d, dtype=torch.float64)[None],
        }
        out = A.SpatialTransform(patch, dummy_2d=dummy_2d).apply(
            {"image": image[None], "seg": seg[None]}, params
        )
        torch.testing.assert_close(
            out["image"][0], torch.from_numpy(cases[f"out_image_{i}"]), atol=1e-5, rtol=0
        )
        assert torch.equal(out["seg"][0], torch.from_numpy(cases[f"out_seg_{i}"])), i


# ---------------------------------------------------------------------------------------------------------
# intensity
# ---------------------------------------------------------------------------------------------------------


def test_noise_std_and_channels_share_sigma():
    image = torch.zeros(2, 2, 64, 64)
    params = {
        "applied": torch.tensor([True, False]),
        "std": torch.tensor([0.05, 0.09], dtype=torch.float64),
        "noise_seed": torch.tensor([7]),
    }
    out = A.GaussianNoise().apply({"image": image}, params)["image"]
    assert out[0, 0].std().item() == pytest.approx(0.05, rel=0.05)
    assert out[0, 1].std().item() == pytest.approx(0.05, rel=0.05)
    assert (out[1] == 0).all()


def reflect_blur(x: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    """batchgeneratorsv2's blur_dimension, rewritten: truncate 6 sigma, odd size, reflect padding."""
    k = A_intensity._gaussian_kernel_size(sigma)
    offsets = torch.linspace(-(k - 1) / 2, (k - 1) / 2, k)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    moved = x.movedim(axis, -1)
    flat = F.pad(moved.reshape(-1, 1, moved.shape[-1]), [k // 2, k // 2], mode="reflect")
    return F.conv1d(flat, kernel.view(1, 1, -1)).view(moved.shape).movedim(-1, axis)


def test_gaussian_kernel_sizes():
    # round(6 sigma + .5) to the nearest odd number (half to even first): 3, 5 or 7 in nnU-Net's range
    assert [A_intensity._gaussian_kernel_size(s) for s in (0.5, 0.58, 0.7, 0.75, 0.92, 1.0)] == [
        3,
        3,
        5,
        5,
        7,
        7,
    ]


def test_blur_matches_reflect_padded_separable_convolution():
    image = torch.randn(2, 2, 7, 9, 8, generator=gen())
    params = {
        "applied": torch.tensor([True, True]),
        "channels": torch.tensor([[True, False], [True, True]]),
        "sigmas": torch.tensor(
            [[[0.5, 0.7, 1.0]] * 2, [[0.9, 0.6, 0.55], [1.0, 1.0, 1.0]]], dtype=torch.float64
        ),
    }
    out = A.GaussianBlur().apply({"image": image}, params)["image"]
    for b, c in [(0, 0), (1, 0), (1, 1)]:
        expected = image[b, c]
        for axis, sigma in enumerate(params["sigmas"][b, c].float().tolist()):
            expected = reflect_blur(expected, sigma, axis)
        torch.testing.assert_close(out[b, c], expected, atol=1e-5, rtol=0)
    assert torch.equal(out[0, 1], image[0, 1])
    assert out.mean().item() == pytest.approx(image.mean().item(), abs=0.02)


def test_contrast_preserves_range_and_mean_where_not_clamped():
    image = torch.rand(50, 3, 20, generator=gen())
    t = A.Contrast(p=1)
    out = t({"image": image}, gen())["image"]
    assert (out.amin(2) >= image.amin(2)).all() and (out.amax(2) <= image.amax(2)).all()
    params = {"applied": torch.tensor([True]), "factors": torch.tensor([[0.5]], dtype=torch.float64)}
    x = torch.tensor([[[0.0, 1.0, 2.0, 5.0]]])
    assert A.Contrast().apply({"image": x}, params)["image"].tolist() == [[[1.0, 1.5, 2.0, 3.5]]]


def test_gamma_one_is_identity_and_stats_are_retained():
    image = torch.rand(3, 2, 10, 10, generator=gen()) * 5 - 1
    for invert in (False, True):
        identity = A.Gamma(p=1, gamma_range=(1.0, 1.0), invert=invert)({"image": image}, gen())["image"]
        torch.testing.assert_close(identity, image, atol=1e-5, rtol=0)
        out = A.Gamma(p=1, gamma_range=(0.7, 1.5), invert=invert)({"image": image}, gen())["image"]
        torch.testing.assert_close(out.mean((2, 3)), image.mean((2, 3)), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.std((2, 3)), image.std((2, 3)), atol=1e-5, rtol=0)
        assert not torch.allclose(out, image)


def test_gamma_curve_value():
    x = torch.tensor([[[0.0, 0.25, 1.0]]])
    params = {"applied": torch.tensor([True]), "gammas": torch.tensor([[2.0]], dtype=torch.float64)}
    curve = torch.tensor([0.0, 0.0625, 1.0])
    expected = (curve - curve.mean()) * (x.std() / curve.std()) + x.mean()  # gamma, then the stats restored
    torch.testing.assert_close(A.Gamma().apply({"image": x}, params)["image"][0, 0], expected)
    inverted = A.Gamma(invert=True).apply({"image": x}, params)["image"][
        0, 0
    ]  # the curve bends the other way
    assert inverted[1] > expected[1]


def test_lowres_matches_interpolate_per_channel():
    image = torch.randn(2, 2, 11, 16, 13, generator=gen())
    params = {
        "applied": torch.tensor([True, True]),
        "channels": torch.tensor([[True, False], [True, True]]),
        "zooms": torch.tensor([[0.5, 0.9], [0.73, 0.61]]),
    }
    out = A.SimulateLowResolution().apply({"image": image}, params)["image"]
    for b, c in [(0, 0), (1, 0), (1, 1)]:
        zoom = params["zooms"][b, c].item()
        small = [round(s * zoom) for s in image.shape[2:]]
        down = F.interpolate(image[b, c][None, None], small, mode="nearest-exact")
        expected = F.interpolate(down, image.shape[2:], mode="trilinear")[0, 0]
        torch.testing.assert_close(out[b, c], expected, atol=1e-5, rtol=0)
    assert torch.equal(out[0, 1], image[0, 1])


def test_lowres_ignores_axis_0_in_dummy_2d():
    image = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 1, 8, 6, 6).contiguous()
    params = {
        "applied": torch.tensor([True]),
        "channels": torch.tensor([[True]]),
        "zooms": torch.tensor([[0.5]]),
    }
    out = A.SimulateLowResolution(ignore_axes=(0,)).apply({"image": image}, params)["image"]
    assert torch.equal(out, image)  # constant in-plane, so only axis 0 could have changed


def test_brightness_multiplies_per_channel():
    params = {
        "applied": torch.tensor([True, False]),
        "multipliers": torch.tensor([[0.8, 1.2], [0.9, 0.9]], dtype=torch.float64),
    }
    out = A.MultiplicativeBrightness().apply({"image": torch.ones(2, 2, 3)}, params)["image"]
    torch.testing.assert_close(out[:, :, 0], torch.tensor([[0.8, 1.2], [1.0, 1.0]]))


@pytest.mark.skipif(not (FIXTURES / "intensity.npz").exists(), reason="no fixture")
def test_intensity_transforms_match_batchgeneratorsv2():
    cases = np.load(FIXTURES / "intensity.npz")
    image = torch.from_numpy(cases["image"])[None]
    both = torch.tensor([True])
    channels = torch.tensor([[True, True]])
    factors = torch.from_numpy(cases["factors"]).double()[None]
    outputs = {
        "blur": A.GaussianBlur().apply(
            {"image": image},
            {"applied": both, "channels": channels, "sigmas": torch.from_numpy(cases["blur_sigmas"])[None]},
        ),
        "brightness": A.MultiplicativeBrightness().apply(
            {"image": image}, {"applied": both, "multipliers": factors}
        ),
        "contrast": A.Contrast().apply({"image": image}, {"applied": both, "factors": factors}),
        "lowres": A.SimulateLowResolution().apply(
            {"image": image},
            {"applied": both, "channels": channels, "zooms": torch.from_numpy(cases["zooms"])[None]},
        ),
    }
    for invert in (0, 1):
        params = {"applied": both, "gammas": torch.from_numpy(cases["gammas"]).double()[None]}
        outputs[f"gamma_invert_{invert}"] = A.Gamma(invert=bool(invert)).apply({"image": image}, params)
    for name, out in outputs.items():
        torch.testing.assert_close(
            out["image"][0], torch.from_numpy(cases[name]), atol=2e-5, rtol=1e-5, msg=name
        )


# ---------------------------------------------------------------------------------------------------------
# mirroring, masking, labels, cascade, regions, deep supervision
# ---------------------------------------------------------------------------------------------------------


def test_mirror_is_per_sample_and_an_involution():
    image, seg = torch.randn(64, 1, 3, 4, 5), torch.randint(0, 3, (64, 1, 3, 4, 5))
    t = A.Mirror((0, 1, 2))
    params = t.sample({"image": image}, gen())
    once = t.apply({"image": image, "seg": seg}, params)
    for b in range(64):
        axes = [a + 1 for a in range(3) if params["flips"][b, a]]
        assert torch.equal(once["image"][b], image[b].flip(axes) if axes else image[b])
        assert torch.equal(once["seg"][b], seg[b].flip(axes) if axes else seg[b])
    twice = t.apply(once, params)
    assert torch.equal(twice["image"], image) and torch.equal(twice["seg"], seg)


def test_mask_image_zeroes_exactly_outside():
    seg = torch.randint(-1, 2, (2, 1, 5, 5))
    out = A.MaskImage((0, 2))({"image": torch.ones(2, 3, 5, 5), "seg": seg}, gen())["image"]
    outside = seg[:, 0] < 0
    assert torch.equal(out[:, 0] == 0, outside) and torch.equal(out[:, 2] == 0, outside)
    assert (out[:, 1] == 1).all()


def test_remove_label():
    seg = torch.tensor([[[-1, 0, 1, 2, -1]], [[3, -1, 0, 0, 1]]])
    out = A.RemoveLabel()({"seg": seg}, gen())["seg"]
    assert torch.equal(out, seg.clamp(min=0))


def test_move_seg_as_one_hot():
    image = torch.rand(2, 1, 4, 4)
    seg = torch.stack([torch.randint(0, 3, (2, 4, 4)), torch.randint(0, 3, (2, 4, 4))], 1)
    out = A.MoveSegAsOneHotToData((1, 2))({"image": image, "seg": seg}, gen())
    assert out["image"].shape == (2, 3, 4, 4) and torch.equal(out["image"][:, 0], image[:, 0])
    assert torch.equal(out["image"][:, 1] == 1, seg[:, 1] == 1) and torch.equal(
        out["image"][:, 2] == 1, seg[:, 1] == 2
    )
    assert torch.equal(out["seg"], seg[:, :1])


def test_regions_with_ignore_label_last():
    seg = torch.tensor([[[0, 1, 2, 3, 4]]])
    pipeline = A.validation_pipeline(regions=[(1, 2, 3), (2, 3), 3], ignore_label=4)
    out = A.augment({"image": torch.zeros(1, 1, 5), "seg": seg}, pipeline, gen())["seg"]
    assert out.dtype == torch.bool
    assert out[0].int().tolist() == [[0, 1, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]


def test_deep_supervision_pyramid():
    seg = torch.randint(0, 3, (2, 1, 16, 20, 12), dtype=torch.int16)
    scales = network.deep_supervision_scales([[1, 1, 1], [2, 2, 2], [1, 2, 2], [2, 2, 2]])
    targets = A.DownsampleSegForDS(scales)({"seg": seg}, gen())["seg"]
    assert [t.shape[2:] for t in targets] == [(16, 20, 12), (8, 10, 6), (8, 5, 3)]
    assert targets[0] is seg and all(t.dtype == torch.int16 for t in targets)
    expected = F.interpolate(seg.float(), (8, 5, 3), mode="nearest-exact").to(torch.int16)
    assert torch.equal(targets[2], expected)


@pytest.mark.skipif(not (FIXTURES / "targets.npz").exists(), reason="no fixture")
def test_deep_supervision_pyramid_matches_batchgeneratorsv2():
    cases = np.load(FIXTURES / "targets.npz")
    seg = torch.from_numpy(cases["seg"])[None]
    targets = A.DownsampleSegForDS(cases["scales"].tolist())({"seg": seg}, gen())["seg"]
    for i, target in enumerate(targets):
        assert torch.equal(target[0], torch.from_numpy(cases[f"level_{i}"])), i


def test_structuring_elements():
    assert A.structuring_element(1.0, 3).sum() == 7  # center + 6 faces
    assert A.structuring_element(2.0, 2).sum() == 13
    odd = A.structuring_element(3.7, 3)  # skimage ball: int(2r+1) = 8 points spread over [-r, r]
    assert odd.shape == (8, 8, 8)
    assert A.structuring_element(3.7, 2).shape == (9, 9)  # skimage disk: arange(-r, r + 1)


@pytest.mark.skipif(not (FIXTURES / "morphology.npz").exists(), reason="no fixture")
def test_structuring_elements_and_operators_match_batchgeneratorsv2():
    cases = np.load(FIXTURES / "morphology.npz")
    for radius in cases["radii"]:
        for ndim in (2, 3):
            expected = cases[f"element_{ndim}d_{radius:.2f}"]
            assert np.array_equal(A.structuring_element(float(radius), ndim).numpy(), expected), (
                radius,
                ndim,
            )
    mask = torch.from_numpy(cases["mask"])
    for i, (radius, operator) in enumerate(zip(cases["op_radii"], cases["operators"])):
        t = A.RandomBinaryOperator(1)
        params = {
            "applied": torch.tensor([True]),
            "chosen": torch.tensor([[True]]),
            "order": torch.tensor([[0]]),
            "operators": torch.tensor([[int(operator)]]),
            "radii": torch.tensor([[float(radius)]], dtype=torch.float64),
        }
        out = t.apply({"image": mask[None, None].float()}, params)["image"][0, 0]
        assert np.array_equal(out.bool().numpy(), cases[f"op_result_{i}"]), (
            radius,
            A.BINARY_OPERATORS[int(operator)],
        )


@pytest.mark.parametrize("operator", A.BINARY_OPERATORS)
def test_binary_operators_match_scipy(operator):
    rng = np.random.default_rng(0)
    mask = ndimage.binary_dilation(rng.random((14, 15, 13)) > 0.97, iterations=2)
    element = A.structuring_element(2.0, 3).numpy()

    def dilate(m):
        return ndimage.binary_dilation(m, element)

    def erode(m):  # the outside counts as foreground: the border does not erode
        return ndimage.binary_erosion(m, element, border_value=1)

    expected = {
        "dilation": dilate,
        "erosion": erode,
        "closing": lambda m: erode(dilate(m)),
        "opening": lambda m: dilate(erode(m)),
    }[operator](mask)
    params = {
        "applied": torch.tensor([True]),
        "chosen": torch.tensor([[True]]),
        "order": torch.tensor([[0]]),
        "operators": torch.tensor([[A.BINARY_OPERATORS.index(operator)]]),
        "radii": torch.tensor([[2.0]], dtype=torch.float64),
    }
    image = torch.cat([torch.zeros(1, 1, *mask.shape), torch.from_numpy(mask)[None, None].float()], 1)
    out = A.RandomBinaryOperator(1).apply({"image": image}, params)["image"]
    assert np.array_equal(out[0, 1].bool().numpy(), expected)
    assert (out[0, 0] == 0).all()  # not a one-hot channel: untouched


def test_binary_operator_removes_added_voxels_from_other_channels():
    one_hot = torch.zeros(1, 2, 9, 9)
    one_hot[0, 0, 4, 4] = 1
    one_hot[0, 1, 4, 5] = 1
    params = {
        "applied": torch.tensor([True]),
        "chosen": torch.tensor([[True, False]]),
        "order": torch.tensor([[0, 1]]),
        "operators": torch.tensor([[0, 0]]),
        "radii": torch.tensor([[1.0, 1.0]], dtype=torch.float64),
    }
    out = A.RandomBinaryOperator(2).apply({"image": one_hot}, params)["image"]
    assert out[0, 0].sum() == 5 and out[0, 1].sum() == 0  # the dilated class took the neighbour's voxel


def test_remove_connected_component():
    image = torch.zeros(1, 1, 20, 20)
    image[0, 0, 1:3, 1:3] = 1  # 4 voxels
    image[0, 0, 10, 10] = 1  # 1 voxel, diagonal neighbour below: one component with full connectivity
    image[0, 0, 11, 11] = 1
    image[0, 0, 5:20, 5:9] = 1  # 60 voxels = 15% of 400: too large to remove
    image[0, 0, 10:12, 10:12] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = A.RemoveRandomConnectedComponent(1)
    removed = []
    for pick in (0.0, 0.99):
        params = {
            "applied": torch.tensor([True]),
            "chosen": torch.tensor([[True]]),
            "picks": torch.tensor([[pick]], dtype=torch.float64),
        }
        out = t.apply({"image": image}, params)["image"]
        removed.append(int((image - out).sum()))
        assert out[0, 0, 5:20, 5:9].all()
    assert sorted(removed) == [2, 4]


# ---------------------------------------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------------------------------------


def make_batch(loaded, b=2, c=2, seg_channels=1, seed=0):
    image = torch.randn(b, c, *loaded, generator=gen(seed))
    seg = torch.stack([torch.cat([blobs(loaded, seed=seed + i)] * seg_channels) for i in range(b)])
    return {"image": image, "seg": seg, "keys": [f"case_{i}" for i in range(b)]}


def test_pipeline_order_and_options():
    names = [
        type(t).__name__
        for t in A.training_pipeline(
            (16, 16, 16),
            (-0.5, 0.5),
            (0, 1, 2),
            use_mask_for_norm=[False, True],
            is_cascaded=True,
            foreground_labels=[1, 2],
            regions=[(1, 2), 2],
            ignore_label=3,
            deep_supervision_scales=[[1, 1, 1]],
        )
    ]
    assert names == [
        "SpatialTransform",
        "GaussianNoise",
        "GaussianBlur",
        "MultiplicativeBrightness",
        "Contrast",
        "SimulateLowResolution",
        "Gamma",
        "Gamma",
        "Mirror",
        "MaskImage",
        "RemoveLabel",
        "MoveSegAsOneHotToData",
        "RandomBinaryOperator",
        "RemoveRandomConnectedComponent",
        "SegToRegions",
        "DownsampleSegForDS",
    ]
    with pytest.raises(ValueError, match="foreground_labels"):
        A.training_pipeline((16, 16), (-0.5, 0.5), (0, 1), is_cascaded=True)
    lowres = A.training_pipeline((8, 32, 32), (-3.1, 3.1), (0, 1, 2), True)[5]
    assert lowres.ignore_axes == (0,)


def test_no_augmentation_is_center_crop_and_label_cleanup():
    batch = make_batch((24, 26, 20))
    pipeline = A.training_pipeline((16, 16, 16), (-0.5, 0.5), (0, 1, 2), settings=no_augmentation())
    out = A.augment(batch, pipeline, gen())
    box = (..., slice(4, 20), slice(5, 21), slice(2, 18))
    assert torch.equal(out["image"], batch["image"][box])
    assert torch.equal(out["seg"], batch["seg"][box].clamp(min=0))
    assert out["keys"] == batch["keys"]


@pytest.mark.parametrize("patch, loaded_seg_channels", [((16, 16, 16), 1), ((4, 24, 20), 1), ((20, 18), 2)])
def test_training_pipeline_end_to_end(patch, loaded_seg_channels):
    rotation, dummy_2d, mirror_axes = A.rotation_and_mirroring_for(patch)
    loaded = A.loaded_patch_size(patch, rotation, dummy_2d=dummy_2d)
    batch = make_batch(loaded, b=3, seg_channels=loaded_seg_channels)
    scales = [[1.0] * len(patch), [0.5] * len(patch)]
    pipeline = A.training_pipeline(
        patch,
        rotation,
        mirror_axes,
        dummy_2d,
        use_mask_for_norm=[True, False],
        is_cascaded=loaded_seg_channels == 2,
        foreground_labels=[1, 2],
        deep_supervision_scales=scales,
    )
    settings = dataclasses.replace(
        A.NNUNET_DEFAULTS,
        **{
            f.name: 1.0
            for f in dataclasses.fields(A.AugmentSettings)
            if f.name.startswith("p_") and "per_" not in f.name
        },
    )
    forced = A.training_pipeline(
        patch,
        rotation,
        mirror_axes,
        dummy_2d,
        settings=settings,
        is_cascaded=loaded_seg_channels == 2,
        foreground_labels=[1, 2],
    )
    for steps in (pipeline, forced):
        out = A.augment(batch, steps, gen())
        image, seg = out["image"], out["seg"][0] if isinstance(out["seg"], list) else out["seg"]
        assert image.shape == (3, 2 + 2 * (loaded_seg_channels == 2), *patch) and seg.shape == (3, 1, *patch)
        assert set(torch.unique(seg).tolist()) <= {0, 1, 2} and torch.isfinite(image).all()
    assert [t.shape[2:] for t in A.augment(batch, pipeline, gen())["seg"]] == [
        patch,
        tuple(p // 2 for p in patch),
    ]


def test_same_seed_same_batch_and_different_seed_different():
    patch = (12, 12, 12)
    rotation, _, mirror_axes = A.rotation_and_mirroring_for(patch)
    batch = make_batch(A.loaded_patch_size(patch, rotation), b=4)
    pipeline = A.training_pipeline(patch, rotation, mirror_axes)
    first, again = A.augment(batch, pipeline, gen(5)), A.augment(batch, pipeline, gen(5))
    other = A.augment(batch, pipeline, gen(6))
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["seg"], again["seg"])
    assert not torch.equal(first["image"], other["image"])


def test_inputs_are_not_modified():
    batch = make_batch((20, 20, 20))
    copy = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
    settings = dataclasses.replace(
        A.NNUNET_DEFAULTS, p_noise=1, p_gamma=1, p_contrast=1, p_blur=1, p_lowres=1
    )
    A.augment(
        batch,
        A.training_pipeline(
            (20, 20, 20), (-0.5, 0.5), (0, 1, 2), settings=settings, use_mask_for_norm=[True, True]
        ),
        gen(),
    )
    assert all(torch.equal(batch[k], v) for k, v in copy.items())


def test_augment_needs_a_cpu_generator():
    class FakeGenerator:
        device = torch.device("cuda")

    with pytest.raises(ValueError, match="CPU torch.Generator"):
        A.augment(make_batch((8, 8, 8)), [], FakeGenerator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_result():
    """The same seed draws the same parameters on either device; without per-voxel noise, the same batch."""
    patch = (16, 16, 16)
    rotation, _, mirror_axes = A.rotation_and_mirroring_for(patch)
    batch = make_batch(A.loaded_patch_size(patch, rotation), b=4)
    settings = dataclasses.replace(A.NNUNET_DEFAULTS, p_noise=0.0, p_rotation=0.5, p_scaling=0.5, p_blur=0.5)
    pipeline = A.training_pipeline(
        patch, rotation, mirror_axes, settings=settings, deep_supervision_scales=[[1] * 3]
    )
    on_cpu = A.augment(batch, pipeline, gen(3))
    on_cuda = A.augment(
        {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}, pipeline, gen(3)
    )
    torch.testing.assert_close(on_cuda["image"].cpu(), on_cpu["image"], atol=1e-4, rtol=1e-4)
    assert (on_cuda["seg"][0].cpu() != on_cpu["seg"][0]).float().mean() < 1e-3


def test_label_scores_one_pass_equals_one_pass_per_label():
    """_label_scores scores all labels at once for a short label range, label by label for a long one; the two
    give the same winners and scores (labels 0, 1, 2 renamed 0, 1, 40 cross from one to the other)."""
    generator = torch.Generator().manual_seed(0)
    candidates = torch.randint(0, 3, (8, 5000), generator=generator, dtype=torch.int64).to(torch.int16)
    weights = torch.rand(8, 5000, generator=generator) * 1000
    weights[:, :100] = 125.0  # exact ties: every corner weighs the same
    renamed = torch.where(candidates == 2, 40, candidates).to(torch.int16)
    best, winner, score = A_spatial._label_scores(candidates, weights)
    best_long, winner_long, score_long = A_spatial._label_scores(renamed, weights)
    assert torch.equal(best, best_long)
    assert torch.equal(torch.where(winner == 2, 40, winner).to(torch.int16), winner_long)
    assert torch.equal(score(candidates[0]), score_long(renamed[0]))
    # equal weights: the most frequent label wins, and of equally frequent ones the lowest
    counts = [[column.tolist().count(label) for label in range(3)] for column in candidates[:, :100].T]
    assert winner[:100].tolist() == [row.index(max(row)) for row in counts]


# --- the pipeline's settings, step by step, against nnU-Net's get_training_transforms -----------------------

PIPELINE_FIXTURE = (
    Path(__file__).parent / "fixtures" / "augment" / "pipeline.json"
)  # make_augment_pipeline.py


def _bg(value_range) -> dict:
    return {"BGContrast": list(value_range)}


def _spatial_record(t: A.SpatialTransform) -> list[dict]:
    patch = list(t.patch_size[1:] if t.dummy_2d else t.patch_size)
    # what _sample_labels / _sample_image implement, stated once: nnU-Net must still ask for exactly this
    assumed = {
        "patch_center_dist_from_border": [0] * len(patch),
        "random_crop": False,
        "p_elastic_deform": 0,
        "elastic_deform_scale": [0, 0.2],
        "elastic_deform_magnitude": [0, 0.2],
        "p_rot_per_axis": 1,
        "p_synchronize_scaling_across_axes": 1,
        "p_synchronize_def_scale_across_axes": 0,
        "bg_style_seg_sampling": False,
        "seg_tiebreak": "nearest",
        "mode_seg": "bilinear",
        "border_mode_seg": "constant",
        "center_deformation": True,
        "mode_image": "bilinear",
        "padding_mode_image": "zeros",
        "padding_value_seg": OUTSIDE_LABEL,
        "padding_value_image": 0,
        "align_corners": False,
    }
    spatial = {
        "name": "SpatialTransform",
        "p": 1,
        "params": {
            "patch_size": patch,
            **assumed,
            "p_rotation": t.p_rotation,
            "rotation": list(t.rotation_range),
            "p_scaling": t.p_scaling,
            "scaling": list(t.scaling_range),
        },
    }
    if not t.dummy_2d:
        return [spatial]
    return [
        {"name": "Convert3DTo2DTransform", "p": 1, "params": {}},
        spatial,
        {"name": "Convert2DTo3DTransform", "p": 1, "params": {}},
    ]


def _records(t) -> list[dict]:
    """Our step as the record(s) make_augment_pipeline.py writes for nnU-Net's step."""
    if isinstance(t, A.SpatialTransform):
        return _spatial_record(t)
    name, p, params = {
        A.GaussianNoise: lambda: (
            "GaussianNoiseTransform",
            t.p,
            {"noise_variance": list(t.std_range), "p_per_channel": 1, "synchronize_channels": True},
        ),
        A.GaussianBlur: lambda: (
            "GaussianBlurTransform",
            t.p,
            {
                "blur_sigma": list(t.sigma_range),
                "synchronize_channels": False,
                "synchronize_axes": False,
                "p_per_channel": t.p_per_channel,
            },
        ),
        A.MultiplicativeBrightness: lambda: (
            "MultiplicativeBrightnessTransform",
            t.p,
            {"multiplier_range": _bg(t.multiplier_range), "synchronize_channels": False, "p_per_channel": 1},
        ),
        A.Contrast: lambda: (
            "ContrastTransform",
            t.p,
            {
                "contrast_range": _bg(t.contrast_range),
                "preserve_range": True,
                "synchronize_channels": False,
                "p_per_channel": 1,
            },
        ),
        A.SimulateLowResolution: lambda: (
            "SimulateLowResolutionTransform",
            t.p,
            {
                "scale": list(t.zoom_range),
                "synchronize_channels": False,
                "synchronize_axes": True,
                "ignore_axes": list(t.ignore_axes) or None,
                "allowed_channels": None,
                "p_per_channel": t.p_per_channel,
                "upmodes": {"1": "linear", "2": "bilinear", "3": "trilinear"},
            },
        ),
        A.Gamma: lambda: (
            "GammaTransform",
            t.p,
            {
                "gamma": _bg(t.gamma_range),
                "p_invert_image": float(t.invert),
                "synchronize_channels": False,
                "p_per_channel": 1,
                "p_retain_stats": 1,
            },
        ),
        A.Mirror: lambda: ("MirrorTransform", 1, {"allowed_axes": list(t.axes)}),
        A.MaskImage: lambda: (
            "MaskImageTransform",
            1,
            {"apply_to_channels": list(t.channels), "channel_idx_in_seg": 0, "set_outside_to": 0},
        ),
        A.RemoveLabel: lambda: (
            "RemoveLabelTransform",
            1,
            {"segmentation_channels": None, "label_value": t.label, "set_to": t.new_label},
        ),
        A.MoveSegAsOneHotToData: lambda: (
            "MoveSegAsOneHotToDataTransform",
            1,
            {
                "source_channel_idx": t.source_channel,
                "all_labels": list(t.labels),
                "remove_channel_from_source": True,
            },
        ),
        A.RandomBinaryOperator: lambda: (
            "ApplyRandomBinaryOperatorTransform",
            t.p,
            {
                "channel_idx": list(range(-t.num_channels, 0)),
                "any_of_these": [
                    "binary_dilation_torch",
                    "binary_erosion_torch",
                    "binary_closing_torch",
                    "binary_opening_torch",
                ],
                "strel_size": list(t.radius_range),
                "p_per_label": t.p_per_channel,
            },
        ),
        A.RemoveRandomConnectedComponent: lambda: (
            "RemoveRandomConnectedComponentFromOneHotEncodingTransform",
            t.p,
            {
                "channel_idx": list(range(-t.num_channels, 0)),
                "fill_with_other_class_p": 0,
                "dont_do_if_covers_more_than_x_percent": t.max_fraction,
                "p_per_label": t.p_per_channel,
            },
        ),
        A.SegToRegions: lambda: (
            "ConvertSegmentationToRegionsTransform",
            1,
            {
                "regions": [
                    [float(v) for v in (r if isinstance(r, (tuple, list)) else [r])] for r in t.regions
                ],
                "channel_in_seg": 0,
            },
        ),
        A.DownsampleSegForDS: lambda: (
            "DownsampleSegForDSTransform",
            1,
            {"ds_scales": [list(s) for s in t.scales]},
        ),
    }[type(t)]()
    return [{"name": name, "p": p, "params": params}]


@pytest.mark.parametrize("setup", ["3d_cascade_regions", "3d_dummy_2d", "2d"])
def test_pipeline_settings_equal_nnunets_step_by_step(setup):
    """Every probability, range and flag of training_pipeline, in order, as nnunetv2 2.8.1 builds them."""
    recorded = json.loads(PIPELINE_FIXTURE.read_text())["setups"][setup]
    a = recorded["arguments"]
    pipeline = A.training_pipeline(
        a["patch_size"],
        tuple(a["rotation_for_DA"]),
        a["mirror_axes"],
        a["do_dummy_2d_data_aug"],
        use_mask_for_norm=a["use_mask_for_norm"],
        is_cascaded=a["is_cascaded"],
        foreground_labels=a["foreground_labels"] or (),
        ignore_label=a["ignore_label"],
        regions=[tuple(r) for r in a["regions"]] if a["regions"] else None,
        deep_supervision_scales=a["deep_supervision_scales"],
    )
    ours = [record for step in pipeline for record in _records(step)]
    assert [r["name"] for r in ours] == [r["name"] for r in recorded["steps"]]
    for mine, theirs in zip(ours, recorded["steps"]):
        assert mine == theirs, mine["name"]
