"""Make the README's planning figures from the demo data (seed 0), with nnseg_nb alone.

Run from the repository root, in the dev environment (about 20 s)::

    python docs/make_figures.py

It builds Dataset901 and Dataset902 in a temporary raw root, plans them, and writes
``docs/figures/patch_boxes_902_0.1GB.png`` (the patch of every configuration of Dataset902 planned
for a 0.1 GB GPU, to scale on a real case) and ``docs/figures/topology_901.png`` (the 3d_fullres
U-Net of Dataset901 at nnU-Net's default 8 GB target). The same figures are drawn in notebook 02.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from nnseg_nb import dataset, demo_data, fingerprint, io, planning
from nnseg_nb.viz.overlay import figure_png
from nnseg_nb.viz.plans import patch_boxes_figure, topology_figure

OUT = Path(__file__).resolve().parent / "figures"


def _planned(folder: Path, gpu_memory_gb: float) -> tuple[planning.Plans, dataset.Case]:
    dataset_json = dataset.load_dataset_json(folder)
    found = fingerprint.extract_fingerprint(folder, num_workers=2, progress=False)
    plans = planning.plan(
        found, dataset_json, planning.preset("default", gpu_memory_gb), dataset_name=folder.name
    )
    first = next(iter(dataset.find_cases(folder, dataset_json).values()))
    return plans, first


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folders = demo_data.build_demo_datasets(
            tmp, only=["Dataset901_BrainTissue", "Dataset902_AnisoSynth"], progress=False
        )
        plans, case = _planned(folders["Dataset902_AnisoSynth"], 0.1)
        image, props = io.read_case(case.images)
        seg, _ = io.read_seg(case.label)
        figure = patch_boxes_figure(plans, image, props["spacing"], seg=seg)
        (OUT / "patch_boxes_902_0.1GB.png").write_bytes(figure_png(figure, dpi=60))
        plans, _ = _planned(folders["Dataset901_BrainTissue"], 8.0)
        (OUT / "topology_901.png").write_bytes(figure_png(topology_figure(plans, "3d_fullres"), dpi=70))
    for png in sorted(OUT.glob("*.png")):
        print(f"wrote {png} ({png.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
