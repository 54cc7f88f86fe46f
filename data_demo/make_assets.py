"""Make ``nnseg_nb/demo_assets/mni_icbm152_2mm.npz``: the MNI ICBM152 2009a template at 2 mm, small enough to ship.

    .venv/bin/python data_demo/make_assets.py [--source FOLDER_WITH_THE_1MM_FILES] [--out nnseg_nb/demo_assets]

Input: the 1 mm T1 template and its gray/white-matter probability maps (197 x 233 x 189 voxels, uint8, the
files nilearn redistributes; see NOTICE.md). Output, arrays in (Z, Y, X) order like everything in nnseg_nb:

- ``t1``: T1 intensities 0..255 (rounded to even values: 7 bits of a smooth image compress far better),
- ``gm``, ``wm``: tissue probabilities x 255, rounded to 16 levels (multiples of 17), which is plenty to draw
  label maps from after interpolation,
- ``spacing``: (2, 2, 2) mm; ``origin``: the MNI (RAS) world position, in mm and (z, y, x) order, of voxel [0, 0, 0].

Each 2 mm voxel is the mean of 2 x 2 x 2 template voxels (exact, no aliasing), over the bounding box of the
brain. The template's NOTICE travels with the asset (``demo_assets/NOTICE.md``) and with this folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "mni_icbm152_2009a"
FILES = {name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("t1", "gm", "wm")}
FACTOR = 2  # 1 mm -> 2 mm
T1_STEP, PROBABILITY_STEP = 2, 17

ASSET_NOTE = """\
# Notice for `mni_icbm152_2mm.npz` (nnseg_nb demo asset)

`mni_icbm152_2mm.npz` is a downsampled copy (2 mm, brain bounding box, values quantized) of the
MNI ICBM152 2009a nonlinear symmetric template (T1, gray-matter and white-matter probability maps),
made by `data_demo/make_assets.py`. `nnseg-nb demo-data` builds `Dataset901_BrainTissue` from it.
The original notice follows and applies to this copy and to every dataset built from it.

"""


def load_template(source: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The three 1 mm volumes as (Z, Y, X) float32 arrays, and the RAS world (z, y, x) of voxel [0, 0, 0]."""
    import nibabel as nib

    volumes, affine = {}, None
    for name, file in FILES.items():
        image = nib.load(source / file)
        if not np.allclose(image.affine[:3, :3], np.eye(3)):
            raise ValueError(
                f"{source / file}: expected an axis-aligned 1 mm RAS grid, affine is\n{image.affine}"
            )
        affine = image.affine if affine is None else affine
        volumes[name] = np.asarray(image.dataobj, dtype=np.float32).transpose(2, 1, 0)
    return volumes, affine[:3, 3][::-1].copy()


def downsample(
    volumes: dict[str, np.ndarray], origin_zyx: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Crop to the brain's bounding box (in whole 2 mm blocks) and average each 2 x 2 x 2 block."""
    brain = (volumes["t1"] > 0) | (volumes["gm"] > 0) | (volumes["wm"] > 0)
    coords = np.argwhere(brain)
    lo = coords.min(0) // FACTOR * FACTOR
    hi = np.minimum(-(-(coords.max(0) + 1) // FACTOR) * FACTOR, np.array(brain.shape) // FACTOR * FACTOR)
    out = {}
    for name, volume in volumes.items():
        block = volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        shape = [n // FACTOR for n in block.shape]
        out[name] = block.reshape(shape[0], FACTOR, shape[1], FACTOR, shape[2], FACTOR).mean(axis=(1, 3, 5))
    # the centre of a 2 mm voxel is the mean of its 1 mm voxels' centres
    return out, origin_zyx + lo + (FACTOR - 1) / 2


def quantize(volumes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    steps = {"t1": T1_STEP, "gm": PROBABILITY_STEP, "wm": PROBABILITY_STEP}
    return {
        name: (np.rint(v / steps[name]) * steps[name]).clip(0, 255).astype(np.uint8)
        for name, v in volumes.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="folder with the 1 mm files and NOTICE.md"
    )
    parser.add_argument("--out", type=Path, default=REPO / "nnseg_nb" / "demo_assets")
    args = parser.parse_args(argv)

    volumes, origin = load_template(args.source)
    small, small_origin = downsample(volumes, origin)
    arrays = quantize(small)
    args.out.mkdir(parents=True, exist_ok=True)
    asset = args.out / "mni_icbm152_2mm.npz"
    np.savez_compressed(asset, **arrays, spacing=np.full(3, float(FACTOR)), origin=small_origin)
    notice = ASSET_NOTE + (args.source / "NOTICE.md").read_text()
    for folder in (args.out, Path(__file__).parent):
        (folder / "NOTICE.md").write_text(notice)
    print(
        f"wrote {asset} ({asset.stat().st_size / 1024:.0f} KB): shape {arrays['t1'].shape}, "
        f"origin (z, y, x) {small_origin.tolist()} mm"
    )


if __name__ == "__main__":
    main()
