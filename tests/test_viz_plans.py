"""Plans figures and the planning widget: drawn geometry equals the plans' numbers, on nnunetv2-written
plans (tests/fixtures/planning/demo) and a small demo case; the widget re-plans as planning.plan does."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.patches import Rectangle
from PIL import Image

from nnseg_nb import planning
from nnseg_nb.demo_data import build_demo_datasets
from nnseg_nb.fingerprint import load_fingerprint
from nnseg_nb.io import read_case, read_seg
from nnseg_nb.viz.overlay import figure_png
from nnseg_nb.viz.planning_widget import planning_widget
from nnseg_nb.viz.plans import (
    configuration_differences,
    deep_supervision_weights,
    fingerprint_figure,
    patch_boxes_figure,
    plotted_configurations,
    topology_figure,
    topology_rows,
)

DEMO = Path(__file__).parent / "fixtures" / "planning" / "demo"
BRAIN, ANISO = DEMO / "Dataset901_BrainTissue", DEMO / "Dataset902_AnisoSynth"


def _write_png(fig, path: Path, dpi: int = 60) -> tuple[int, int]:
    data = figure_png(fig, dpi=dpi)
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as image:
        return image.width, image.height


def _inputs(folder: Path) -> tuple[dict, dict]:
    return load_fingerprint(folder / "dataset_fingerprint.json"), json.loads(
        (folder / "dataset.json").read_text()
    )


@pytest.fixture(scope="module")
def aniso_case(tmp_path_factory):
    """The first case of a 2-case Dataset902_AnisoSynth build (the full build's first case)."""
    raw = tmp_path_factory.mktemp("raw")
    folder = build_demo_datasets(raw, only=["AnisoSynth"], num_train=2, num_test=0, progress=False)[
        "Dataset902_AnisoSynth"
    ]
    image, props = read_case(sorted((folder / "imagesTr").glob("*_0000.nii.gz"))[:1])
    seg, _ = read_seg(sorted((folder / "labelsTr").glob("*.nii.gz"))[0])
    return image, seg, props["spacing"]


def _boxes(fig) -> dict[str, Rectangle]:
    return {p.get_gid(): p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle) and p.get_gid()}


def test_patch_boxes_are_patch_size_times_spacing(aniso_case, tmp_path):
    image, seg, spacing = aniso_case
    plans = planning.load_plans(ANISO / "nnUNetPlans_100MB.json")  # nnunetv2's: 2d, 3d_lowres, 3d_fullres
    assert plotted_configurations(plans) == ["2d", "3d_fullres", "3d_lowres"]
    fig = patch_boxes_figure(ANISO / "nnUNetPlans_100MB.json", image, spacing, seg=seg)
    boxes = _boxes(fig)
    assert len(boxes) == 9 and len(fig.axes) == 9
    for name in ("3d_fullres", "3d_lowres"):
        c = plans.configuration(name)
        mm = np.array(c.patch_size) * np.array(c.spacing)
        for axis in range(3):
            rows, cols = (a for a in range(3) if a != axis)
            box = boxes[f"{name} axis {axis}"]
            assert box.get_width() == pytest.approx(mm[cols]) and box.get_height() == pytest.approx(mm[rows])
    two_d = plans.configuration("2d")
    in_plane = np.array(two_d.patch_size) * np.array(two_d.spacing)
    assert (boxes["2d axis 0"].get_height(), boxes["2d axis 0"].get_width()) == pytest.approx(tuple(in_plane))
    assert boxes["2d axis 1"].get_height() == pytest.approx(spacing[0])  # one slice thick
    # the image is drawn in mm: its extent is the resampled grid, close to shape * spacing
    extent = fig.axes[0].images[0].get_extent()
    assert extent[1] == pytest.approx(image.shape[3] * spacing[2], rel=0.02)
    titles = [sub._suptitle.get_text() for sub in fig.subfigs]
    fullres_patch = " x ".join(map(str, plans.configuration("3d_fullres").patch_size))
    assert titles[1].startswith(f"3d_fullres: patch {fullres_patch} voxels = ")
    width, height = _write_png(fig, tmp_path / "boxes.png")
    assert 400 < width < 1000 and 500 < height < 1400 and (tmp_path / "boxes.png").stat().st_size > 20_000


def test_patch_boxes_follow_transpose_forward(aniso_case):
    """A plans file that puts the reader's last axis first: the case is transposed before drawing."""
    image, _, spacing = aniso_case
    plans = planning.load_plans(ANISO / "nnUNetPlans.json").to_json()
    plans["transpose_forward"], plans["transpose_backward"] = [2, 0, 1], [1, 2, 0]
    fig = patch_boxes_figure(plans, image, spacing, configurations=["3d_fullres"])
    c = planning.Plans.from_json(plans).configuration("3d_fullres")
    box = _boxes(fig)["3d_fullres axis 0"]
    assert (box.get_height(), box.get_width()) == pytest.approx(
        (c.patch_size[1] * c.spacing[1], c.patch_size[2] * c.spacing[2])
    )
    assert fig.axes[0].get_title() == f"X = {(image.shape[3] - 1) // 2}"  # reader axis 2 is the plan's axis 0


def test_topology_rows_and_figure(tmp_path):
    plans = planning.load_plans(ANISO / "nnUNetPlans.json")
    c = plans.configuration("3d_fullres")
    rows = topology_rows(c)
    n = c.architecture.n_stages
    assert [r["stage"] for r in rows["encoder"]] == list(range(n))
    size = np.array(c.patch_size)
    for r, stride in zip(rows["encoder"], c.architecture.strides):
        size = size // np.array(stride)
        assert r["size"] == size.tolist()
    assert rows["encoder"][-1]["size"] == [6, 6, 7]  # 24 x 96 x 112 pooled 2/4/4 times
    assert [r["stage"] for r in rows["decoder"]] == list(range(n - 2, -1, -1))
    assert [r["features"] for r in rows["encoder"]] == c.architecture.features_per_stage
    assert rows["decoder"][-1]["output"] == 0 and rows["decoder"][0]["weight"] == 0.0

    fig = topology_figure(plans, "3d_fullres")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum(t.startswith("stage ") for t in texts) == n
    for r in rows["encoder"]:
        assert any(
            t.startswith(
                f"stage {r['stage']}: {' x '.join(map(str, r['size']))}\n{r['features']} ch, 2 convs"
            )
            for t in texts
        )
    assert sum(t.startswith("output ") for t in texts) == n - 1
    width, height = _write_png(fig, tmp_path / "topology.png")
    assert 400 < width < 900 and 200 < height < 500 and (tmp_path / "topology.png").stat().st_size > 10_000


def test_topology_of_residual_encoder_unet():
    plans = planning.load_plans(BRAIN / "nnUNetResEncUNetMPlans.json")
    c = plans.configuration("3d_fullres")
    rows = topology_rows(c)
    assert [r["blocks"] for r in rows["encoder"]] == c.architecture.arch_kwargs["n_blocks_per_stage"]
    assert all(r["convs"] == 1 for r in rows["decoder"])
    texts = [t.get_text() for t in topology_figure(plans, "3d_fullres").axes[0].texts]
    assert any("3 res blocks" in t for t in texts) and any("stem conv" in t for t in texts)


def test_deep_supervision_weights():
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def test_fingerprint_figure(tmp_path):
    fingerprint, dataset_json = _inputs(BRAIN)
    fig = fingerprint_figure(fingerprint, dataset_json)
    spacing_ax = fig.axes[0]
    dots = np.concatenate([c.get_offsets()[:, 1] for c in spacing_ax.collections])
    assert sorted(dots) == pytest.approx(sorted(np.ravel(fingerprint["spacings"])))
    assert [t.get_text() for t in fig.axes[2].get_yticklabels()] == ["0: T1"]
    width, height = _write_png(fig, tmp_path / "fingerprint.png")
    assert 400 < width < 800 and 150 < height < 300 and (tmp_path / "fingerprint.png").stat().st_size > 10_000


def test_configuration_differences():
    fingerprint, dataset_json = _inputs(BRAIN)
    ours = planning.plan(fingerprint, dataset_json, dataset_name="Dataset901_BrainTissue")
    assert configuration_differences(ours, BRAIN / "nnUNetPlans.json") == {
        "plans": [],
        "2d": [],
        "3d_fullres": [],
    }
    other = planning.load_plans(BRAIN / "nnUNetPlans_1GB.json")
    differences = configuration_differences(ours, other)
    assert "plans_name" in differences["plans"] and "patch_size" in differences["3d_fullres"]
    lowres = planning.load_plans(ANISO / "nnUNetPlans_100MB.json")
    assert configuration_differences(lowres, planning.load_plans(ANISO / "nnUNetPlans.json"))[
        "3d_lowres"
    ] == ["only in the first"]


def test_widget_replans_as_planning_does(aniso_case):
    fingerprint, dataset_json = _inputs(ANISO)
    image, _, spacing = aniso_case
    widget = planning_widget(fingerprint, dataset_json, image, spacing)
    assert widget.gpu_memory.value == 8.0 and widget.picture.value[:4] == b"\x89PNG"
    default = planning.plan(fingerprint, dataset_json)
    assert widget.plans.to_json() == default.to_json()
    widget.gpu_memory.value = 0.1
    small = planning.plan(fingerprint, dataset_json, planning.preset("default", 0.1))
    assert widget.plans.to_json() == small.to_json()
    assert small.configuration("3d_fullres").patch_size != default.configuration("3d_fullres").patch_size
    lowres = small.configuration("3d_lowres")
    assert (
        f"3d_lowres: patch {' x '.join(map(str, lowres.patch_size))}, batch {lowres.batch_size}"
        in widget.text.value
    )
    widget.preset.value = "resenc-l"  # the slider follows the preset's own target
    assert widget.gpu_memory.value == 24.0
    assert widget.plans.to_json() == planning.plan(fingerprint, dataset_json, planning.RESENC_L).to_json()
    batch = widget.plans.configuration("3d_fullres").batch_size
    assert f"3d_fullres: patch 24 x 96 x 112, batch {batch}," in widget.text.value


def test_widget_controls_are_readable_and_the_picture_sharp(aniso_case):
    """ipywidgets 8 cut "GPU memory" and the readout short, and stretched the picture to the output's width."""
    fingerprint, dataset_json = _inputs(ANISO)
    image, _, spacing = aniso_case
    widget = planning_widget(fingerprint, dataset_json, image, spacing, dpi=50)
    assert widget.gpu_memory.style.description_width == "initial" and widget.gpu_memory.readout is False
    assert widget.memory_readout.value == "8 GB"
    widget.gpu_memory.value = 0.25
    assert widget.memory_readout.value == "0.25 GB"
    with Image.open(io.BytesIO(widget.picture.value)) as picture:
        width, height = picture.size  # rendered at twice the dpi, shown at half: sharp on high-DPI screens
    assert (
        widget.picture.layout.width == f"{width // 2}px"
        and widget.picture.layout.height == f"{height // 2}px"
    )
    with Image.open(io.BytesIO(figure_png(widget.figure(), dpi=50))) as static:
        assert abs(static.size[0] - width // 2) <= 2  # the same size as the static copy


def test_intensity_statistics_compare_within_summation_order():
    """numpy < 2.3 sums 1e8 float32 values in another order: the mean moves by ~8e-6 relative."""
    fingerprint, dataset_json = _inputs(BRAIN)
    ours = planning.plan(fingerprint, dataset_json, dataset_name="Dataset901_BrainTissue").to_json()
    moved = json.loads(json.dumps(ours))
    stats = moved["foreground_intensity_properties_per_channel"]["0"]
    stats["mean"] *= 1 + 8e-6
    stats["std"] *= 1 - 5e-6
    assert configuration_differences(ours, moved)["plans"] == []
    assert configuration_differences(ours, moved, intensity_rtol=0)["plans"] == [
        "foreground_intensity_properties_per_channel"
    ]
    stats["mean"] *= 1.01  # a real difference is still one
    assert configuration_differences(ours, moved)["plans"] == ["foreground_intensity_properties_per_channel"]
    spacing_moved = json.loads(json.dumps(ours))
    spacing_moved["configurations"]["3d_fullres"]["spacing"][0] *= 1 + 1e-9  # no tolerance elsewhere
    assert configuration_differences(ours, spacing_moved)["3d_fullres"] == ["spacing"]


def test_widget_without_image_and_unknown_preset(capsys):
    fingerprint, dataset_json = _inputs(BRAIN)
    widget = planning_widget(fingerprint, dataset_json, preset="resenc-m")
    assert widget.picture.layout.display == "none" and widget.gpu_memory.value == 8.0
    widget.show_static()
    assert capsys.readouterr().out.splitlines()[0] == "ResEnc M at 8 GB"
    with pytest.raises(ValueError, match="no case to draw on"):
        widget.figure()
    with pytest.raises(ValueError, match="unknown planner preset"):
        planning_widget(fingerprint, dataset_json, preset="huge")


def test_readme_figures_script_draws_both_figures(tmp_path, monkeypatch):
    """docs/make_figures.py (the README's pictures) still runs against the library, and draws sane PNGs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_figures", Path(__file__).parents[1] / "docs" / "make_figures.py"
    )
    make_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_figures)
    monkeypatch.setattr(make_figures, "OUT", tmp_path)
    make_figures.main()
    sizes = {}
    for name in ("patch_boxes_902_0.1GB.png", "topology_901.png"):
        with Image.open(tmp_path / name) as image:
            sizes[name] = image.size
    assert (
        400 < sizes["patch_boxes_902_0.1GB.png"][0] < 700
        and 500 < sizes["patch_boxes_902_0.1GB.png"][1] < 800
    )
    assert 500 < sizes["topology_901.png"][0] < 900 and 250 < sizes["topology_901.png"][1] < 500
