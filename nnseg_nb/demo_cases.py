"""How one case of each demo dataset is drawn: arrays and geometry from one ``np.random.Generator``.

    rng = case_rng(seed=0, dataset_id=904, case_index=0)
    channels, seg, props = shapes_case(rng)      # [(1, 128, 128) uint8 image], (1, 128, 128) uint8 seg, props
    channels, seg, props = brain_case(load_mni_asset(), case_rng(0, 901, 0))   # deformed MNI template

One function per dataset (:func:`brain_case`, :func:`aniso_case`, :func:`multichannel_case`,
:func:`shapes_case`) plus the shared pieces (smooth random fields, Rician noise, geometry). Writing the
cases as datasets on disk is :mod:`nnseg_nb.demo_data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np
from scipy import ndimage

from . import io

MNI_ASSET = "mni_icbm152_2mm.npz"

# A case is (channels: list of (Z, Y, X) arrays, seg: (Z, Y, X) uint8, props for io.write_*).
CaseArrays = tuple[list[np.ndarray], np.ndarray, dict]


# --- shared pieces -------------------------------------------------------------------------------


def case_rng(seed: int, dataset_id: int, case_index: int) -> np.random.Generator:
    """The generator of one case: independent of every other case, so a subset build equals the full one's start."""
    return np.random.default_rng([int(seed), int(dataset_id), int(case_index)])


def smooth_field(
    rng: np.random.Generator, shape: Sequence[int], num_control: int | Sequence[int] = 4, std: float = 1.0
) -> np.ndarray:
    """A random low-frequency field of ``shape``: normal values on a coarse grid, cubic-spline upsampled.

    Args:
        num_control: control points per axis (int or one per axis); fewer means smoother.
        std: standard deviation of the control values (the field's own is somewhat smaller, 0.5-0.8 x).

    >>> smooth_field(np.random.default_rng(0), (20, 30), 3).shape
    (20, 30)
    """
    num_control = [num_control] * len(shape) if np.isscalar(num_control) else list(num_control)
    field = rng.normal(0.0, std, size=num_control)
    # The cubic spline is separable: upsampling one axis at a time (a small matrix each) gives what
    # ndimage.zoom(field, ..., order=3, mode="nearest") gives, a hundred times faster.
    for axis, (n, c) in enumerate(zip(shape, num_control)):
        upsample = np.stack(
            [ndimage.zoom(unit, n / c, order=3, mode="nearest") for unit in np.eye(c)], axis=1
        )
        field = np.moveaxis(np.moveaxis(field, axis, -1) @ upsample.T, -1, axis)
    return np.ascontiguousarray(field)


def grid_props(spacing: Sequence[float], origin: Sequence[float]) -> dict:
    """``props`` for :func:`nnseg_nb.io.write_image` of an axis-aligned RAS grid.

    Args:
        spacing: voxel size in mm, (Z, Y, X) order.
        origin: world position (RAS, mm) of voxel [0, 0, 0], (z, y, x) order.

    The NIfTI files get the affine ``diag(sx, sy, sz)`` + origin; through ITK's LPS convention that is
    direction diag(-1, -1, 1) and origin (-x, -y, z).
    """
    z, y, x = (float(v) for v in origin)
    return {
        "spacing": [float(s) for s in spacing],
        "sitk": {
            "dimension": 3,
            "spacing": [float(s) for s in spacing[::-1]],
            "origin": [-x, -y, z],
            "direction": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
        },
    }


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude-MRI noise: ``|signal + complex Gaussian noise|``."""
    return np.hypot(signal + rng.normal(0.0, sigma, signal.shape), rng.normal(0.0, sigma, signal.shape))


def _centred_axes(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Open-grid world coordinates (mm) of the voxel centres, 0 at the image centre (broadcastable)."""
    axes = []
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        view = [1] * len(shape)
        view[axis] = n
        axes.append(((np.arange(n) - (n - 1) / 2) * s).reshape(view))
    return axes


def _ellipsoid(
    coords: Sequence[np.ndarray], centre: Sequence[float], semi_axes: Sequence[float]
) -> np.ndarray:
    """Normalised radius ``sqrt(sum(((x - c) / a)^2))`` (< 1 inside) on open-grid coordinates."""
    return np.sqrt(sum(((x - c) / a) ** 2 for x, c, a in zip(coords, centre, semi_axes)))


def _to_int16(image: np.ndarray) -> np.ndarray:
    return np.rint(image).clip(-32768, 32767).astype(np.int16)


# --- Dataset901_BrainTissue: the MNI template, deformed --------------------------------------------


def load_mni_asset() -> dict[str, np.ndarray]:
    """The shipped 2 mm MNI ICBM152 2009a template (see ``data_demo/make_assets.py``).

    Returns:
        ``t1`` (Z, Y, X) float32 in 0..1, ``gm`` and ``wm`` tissue probabilities (Z, Y, X) float32 in 0..1,
        ``spacing`` (Z, Y, X) mm and ``origin`` (world z, y, x in mm of voxel [0, 0, 0]).
    """
    with resources.files(__package__).joinpath("demo_assets", MNI_ASSET).open("rb") as f:
        stored = dict(np.load(f))
    out = {name: stored[name].astype(np.float32) / 255 for name in ("t1", "gm", "wm")}
    out.update(spacing=stored["spacing"].astype(float), origin=stored["origin"].astype(float))
    return out


def _random_brain_geometry(
    asset: dict, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spacing, shape and origin of a grid around the brain, generous enough for any deformation."""
    in_plane = rng.uniform(2.2, 2.6)
    spacing = np.array(
        [in_plane * rng.uniform(0.95, 1.1), in_plane, in_plane]
    )  # (Z, Y, X): slices a bit thicker
    extent = np.array(asset["t1"].shape) * asset["spacing"]
    shape = np.ceil((extent * 1.15 + 20.0) / spacing).astype(int)
    centre = asset["origin"] + (np.array(asset["t1"].shape) - 1) / 2 * asset["spacing"]
    origin = centre + rng.uniform(-3.0, 3.0, size=3) - (shape - 1) / 2 * spacing
    return spacing, shape, origin


def _brain_template_coordinates(
    asset: dict, rng: np.random.Generator, spacing: np.ndarray, shape: np.ndarray, origin: np.ndarray
) -> np.ndarray:
    """For every voxel of the case, where to read the template (its voxel coordinates, shape (3, Z, Y, X)).

    The template is scaled (0.92-1.04 overall, times 0.96-1.04 per axis), rotated (up to 8 degrees about
    each axis), shifted, and warped by a smooth displacement field of a few millimetres.
    """
    from scipy.spatial.transform import Rotation

    scale = rng.uniform(0.92, 1.04) * rng.uniform(0.96, 1.04, size=3)
    rotation = Rotation.from_euler("zyx", rng.uniform(-8.0, 8.0, size=3), degrees=True).as_matrix()
    inverse = np.linalg.inv(rotation @ np.diag(scale))
    centre = asset["origin"] + (np.array(asset["t1"].shape) - 1) / 2 * asset["spacing"]
    world = np.stack(
        np.meshgrid(*[origin[a] + np.arange(shape[a]) * spacing[a] for a in range(3)], indexing="ij")
    )
    moved = (
        np.einsum("ij,j...->i...", inverse, world - centre[:, None, None, None]) + centre[:, None, None, None]
    )
    warp = np.stack([smooth_field(rng, shape, 5, std=2.5) for _ in range(3)])  # mm
    return (moved + warp - asset["origin"][:, None, None, None]) / asset["spacing"][:, None, None, None]


def brain_case(asset: dict, rng: np.random.Generator) -> CaseArrays:
    """One T1 image and its label map (0 background and CSF, 1 gray matter, 2 white matter)."""
    spacing, shape, origin = _random_brain_geometry(asset, rng)
    coordinates = _brain_template_coordinates(asset, rng, spacing, shape, origin)
    t1, gm, wm = (
        ndimage.map_coordinates(asset[k], coordinates, order=1, cval=0.0) for k in ("t1", "gm", "wm")
    )
    # the field of view: the brain plus 3-7 empty voxels on each side, so crop-to-nonzero has work to do
    brain = t1 > 0.05  # the template is skull-stripped: outside the brain the image is exactly 0
    found = np.argwhere(brain)
    lo = np.maximum(found.min(0) - rng.integers(3, 8, size=3), 0)
    hi = np.minimum(found.max(0) + 1 + rng.integers(3, 8, size=3), shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    t1, gm, wm, brain = t1[box], gm[box], wm[box], brain[box]
    # the most probable tissue of each voxel; background includes the CSF (1 - gm - wm)
    seg = np.argmax(np.stack([1.0 - gm - wm, gm, wm]), axis=0).astype(np.uint8)
    # float64 from here on: numpy vectorises float32 ``**`` differently on AVX-512 processors, and the
    # last-bit differences it leaves would flip int16 voxels, so the same seed gave other bytes there.
    t1 = ndimage.gaussian_filter(t1.astype(np.float64), rng.uniform(0.0, 0.6))  # scanners differ in sharpness
    signal = t1.clip(0, None) ** rng.uniform(0.7, 1.4)  # contrast (gamma)
    signal = signal * np.exp(smooth_field(rng, t1.shape, 3, std=0.15))  # coil bias field
    scale = rng.uniform(300.0, 1200.0)  # arbitrary scanner units
    image = rician(rng, signal * scale, rng.uniform(0.01, 0.035) * scale)
    image = np.where(brain, np.maximum(image, 1.0), 0.0)  # the nonzero mask is exactly the brain
    return [_to_int16(image)], seg, grid_props(spacing, origin + lo * spacing)


# --- Dataset902_AnisoSynth: thick slices, a large organ and a small lesion ---------------------------


def aniso_case(rng: np.random.Generator) -> CaseArrays:
    """An MRI-like volume of 16-24 slices of 4-5 mm (0.8-1 mm in-plane): body, organ (1), lesion in it (2).

    The scene is drawn on 3 sub-slices per slice and averaged (the partial volume of a thick slice);
    the label is the scene at the slice centre. Half of the cases are zero outside the body.
    """
    shape = np.array([rng.integers(16, 25), *rng.integers(96, 129, size=2)])
    spacing = np.array([rng.uniform(4.0, 5.0), *[rng.uniform(0.8, 1.0)] * 2])
    sub = 3
    fine_shape, fine_spacing = shape * [sub, 1, 1], spacing / [sub, 1, 1]
    z, y, x = _centred_axes(fine_shape, fine_spacing)
    fov = shape * spacing
    body = _ellipsoid((y, x), rng.uniform(-0.03, 0.03, 2) * fov[1:], rng.uniform(0.36, 0.45, 2) * fov[1:]) < 1
    # the organ: an ellipsoid turned in-plane, its surface pushed in and out by a smooth field
    angle = rng.uniform(0, np.pi)
    u, v = y * np.cos(angle) - x * np.sin(angle), y * np.sin(angle) + x * np.cos(angle)
    radius = _ellipsoid(
        (z, u, v),
        rng.uniform(-0.08, 0.08, 3) * fov,
        [rng.uniform(0.22, 0.32) * fov[0], *(rng.uniform(0.2, 0.28, 2) * fov[1:])],
    )
    organ = body & (radius < 1 + 0.15 * smooth_field(rng, fine_shape, (3, 4, 4)))
    centres = np.argwhere((radius < 0.6)[sub // 2 :: sub])  # voxels (at slice centres) deep inside the organ
    lesion_centre = (centres[rng.integers(len(centres))] - (shape - 1) / 2) * spacing
    lesion = organ & (_ellipsoid((z, y, x), lesion_centre, [rng.uniform(3.5, 7.0)] * 3) < 1)

    organ_level = rng.uniform(1.4, 1.8)
    lesion_level = organ_level * (rng.uniform(0.45, 0.65) if rng.random() < 0.5 else rng.uniform(1.3, 1.5))
    texture = 1 + smooth_field(rng, fine_shape, (4, 12, 12), std=0.06)
    scene = np.where(lesion, lesion_level, np.where(organ, organ_level, np.where(body, 1.0, 0.0))) * texture
    signal = scene.reshape(shape[0], sub, *shape[1:]).mean(axis=1) * np.exp(
        smooth_field(rng, shape, 3, std=0.1)
    )
    scale = rng.uniform(100.0, 2000.0)
    image = np.maximum(rician(rng, signal * scale, rng.uniform(0.02, 0.05) * scale), 1.0)  # no stray zeros
    if rng.random() < 0.5:  # e.g. a scanner that zeroes the air: the nonzero mask is the body
        image = np.where(body, image, 0.0)
    seg = np.where(lesion, 2, np.where(organ, 1, 0)).astype(np.uint8)[sub // 2 :: sub]
    return [_to_int16(image)], seg, grid_props(spacing, rng.uniform(-20, 20, 3) - (shape - 1) / 2 * spacing)


# --- Dataset903_MultiChannel: CT (HU) + T2 of an abdomen-like phantom ---------------------------------

# (CT in HU, T2 relative signal) of each tissue; the organ is enhanced on CT, the cyst is fluid.
_TISSUES = {
    "air": (-1000, 0.0),
    "fat": (-100, 0.75),
    "muscle": (45, 0.3),
    "bone": (800, 0.08),
    "marrow": (280, 0.45),
    "organ": (90, 0.5),
    "cyst": (10, 1.0),
}


def _multichannel_scene(
    rng: np.random.Generator, shape: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Tissue index map (indices into ``_TISSUES``) and the organ and cyst masks."""
    z, y, x = _centred_axes(shape, spacing)
    fov = shape * spacing
    body_axes = rng.uniform([0.36, 0.40], [0.44, 0.47]) * fov[1:]
    body = _ellipsoid((y, x), (0, 0), body_axes)
    inner = _ellipsoid((y, x), (0, 0), body_axes - rng.uniform(3.0, 6.0))  # inside the subcutaneous fat
    spine = np.hypot(
        y + 0.5 * body_axes[0], x - rng.uniform(-3, 3)
    )  # distance from the spine's axis (posterior)
    spine_radius = rng.uniform(0.15, 0.22) * body_axes[0]
    organ_centre = rng.uniform([-0.15, -0.3, 0.15], [0.15, 0.1, 0.4]) * [fov[0], *body_axes]
    organ_centre[2] *= rng.choice([-1, 1])  # left or right
    organ_axes = [rng.uniform(0.22, 0.32) * fov[0], *(rng.uniform(0.28, 0.4, 2) * body_axes)]
    organ_radius = _ellipsoid((z, y, x), organ_centre, organ_axes)
    organ = (organ_radius < 1 + 0.12 * smooth_field(rng, shape, 4)) & (inner < 1)
    centres = np.argwhere(organ_radius < 0.5)
    cyst_centre = (centres[rng.integers(len(centres))] - (shape - 1) / 2) * spacing
    cyst = organ & (_ellipsoid((z, y, x), cyst_centre, [rng.uniform(3.0, 6.0)] * 3) < 1)

    names = list(_TISSUES)
    tissue = np.full(shape, names.index("air"), np.uint8)
    tissue[np.broadcast_to(body < 1, shape)] = names.index("fat")
    tissue[np.broadcast_to(inner < 1, shape)] = names.index("muscle")
    for _ in range(rng.integers(2, 5)):  # bowel gas
        gas = _ellipsoid((z, y, x), rng.uniform(-0.35, 0.35, 3) * fov, rng.uniform(3.0, 7.0, 3)) < 1
        tissue[gas & np.broadcast_to(inner < 0.9, shape)] = names.index("air")
    tissue[np.broadcast_to(spine < spine_radius, shape)] = names.index("bone")
    tissue[np.broadcast_to(spine < spine_radius - 1.5, shape)] = names.index("marrow")
    tissue[organ] = names.index("organ")
    tissue[cyst] = names.index("cyst")
    return tissue, {"organ": organ, "cyst": cyst}


def multichannel_case(rng: np.random.Generator) -> CaseArrays:
    """CT in HU (air -1000, fat -100, bone 800 ...) and a T2 image of the same scene; labels organ (1), cyst (2).

    On CT the cyst and the organ differ, but the organ is close to muscle; on T2 the cyst is the brightest
    thing and the organ stands out from muscle: both channels help.
    """
    spacing = rng.uniform(1.0, 1.5) * rng.uniform(0.95, 1.05, size=3)
    shape = rng.integers(48, 65, size=3)
    tissue, masks = _multichannel_scene(rng, shape, spacing)
    jitter = rng.uniform(0.9, 1.1, size=(len(_TISSUES), 2))  # tissue values vary a little between cases
    ct_values, t2_values = (np.array(list(_TISSUES.values())) * jitter).T
    ct_values[0] = -1000  # air is air
    blur = rng.uniform(0.4, 0.8)  # the scanner's point spread, in voxels
    ct = ndimage.gaussian_filter(ct_values[tissue] + smooth_field(rng, shape, 6, std=10.0), blur)
    ct = (ct + rng.normal(0, rng.uniform(8.0, 20.0), shape)).clip(-1024, 3071)
    t2 = ndimage.gaussian_filter(t2_values[tissue] * (1 + smooth_field(rng, shape, 6, std=0.05)), blur)
    scale = rng.uniform(300.0, 1500.0)
    t2 = rician(
        rng, t2 * np.exp(smooth_field(rng, shape, 3, std=0.15)) * scale, rng.uniform(0.02, 0.04) * scale
    )
    seg = np.where(masks["cyst"], 2, np.where(masks["organ"], 1, 0)).astype(np.uint8)
    origin = rng.uniform(-30, 30, 3) - (shape - 1) / 2 * spacing
    return [_to_int16(ct), _to_int16(t2)], seg, grid_props(spacing, origin)


# --- Dataset904_Shapes2D: textured ellipses and triangles ------------------------------------------


def _shape_mask(
    rng: np.random.Generator, kind: int, centre: np.ndarray, size: float, y: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """An ellipse (kind 1) or a triangle (kind 2) of about ``size`` pixels radius, randomly turned."""
    angle = rng.uniform(0, 2 * np.pi)
    if kind == 1:
        u = (y - centre[0]) * np.cos(angle) + (x - centre[1]) * np.sin(angle)
        v = -(y - centre[0]) * np.sin(angle) + (x - centre[1]) * np.cos(angle)
        return (u / size) ** 2 + (v / (size * rng.uniform(0.5, 1.0))) ** 2 < 1
    corners = centre + size * np.stack(
        [
            np.sin(angle + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)),
            np.cos(angle + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)),
        ],
        1,
    )
    inside = np.ones(y.shape, bool)
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):  # on the centre's side of every edge
        inside &= np.sign(_side_of_line(a, b, y, x)) == np.sign(_side_of_line(a, b, *centre))
    return inside


def _side_of_line(a: np.ndarray, b: np.ndarray, y, x):
    """Positive on one side of the line through the (y, x) points a and b, negative on the other."""
    return (b[1] - a[1]) * (y - a[0]) - (b[0] - a[0]) * (x - a[1])


def shapes_case(rng: np.random.Generator, size: int = 128) -> CaseArrays:
    """A grayscale image with 3-6 textured shapes: ellipses (label 1) and triangles (label 2), same intensities."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    image = 90 + smooth_field(rng, (size, size), 5, std=15.0)
    seg = np.zeros((size, size), np.uint8)
    kinds = [1, 2, *rng.integers(1, 3, size=rng.integers(1, 5))]
    placed: list[tuple[np.ndarray, float]] = []
    for kind in kinds:
        for _ in range(20):  # look for a place that does not cover earlier shapes
            centre, radius = rng.uniform(16, size - 16, 2), rng.uniform(9.0, 18.0)
            if all(np.hypot(*(centre - c)) > 0.9 * (radius + r) for c, r in placed):
                break
        else:
            continue
        placed.append((centre, radius))
        mask = _shape_mask(rng, kind, centre, radius, y, x)
        phase = rng.uniform(0, 2 * np.pi)
        direction, period = rng.uniform(0, np.pi), rng.uniform(4.0, 10.0)
        stripes = np.sin(2 * np.pi * (y * np.cos(direction) + x * np.sin(direction)) / period + phase)
        image[mask] = (rng.uniform(120, 200) + rng.uniform(5, 25) * stripes)[mask]
        seg[mask] = kind
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(0, rng.uniform(4.0, 12.0), (size, size))
    return (
        [np.rint(image.clip(0, 255)).astype(np.uint8)[None]],
        seg[None],
        {"spacing": [io.FAKE_2D_SPACING, 1.0, 1.0]},
    )
