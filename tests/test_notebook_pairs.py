"""The notebook contract, checked on every notebooks/NN_*.py and on the template in notebooks/README.md:
paired .ipynb in sync, standard first cells (title + Colab badge, guarded install, parameters with
profile/seed/out_dir), results.json written, widget cells ignored by nbval, no papermill leftovers.
Also the nbval sanitizers, on examples. Nothing here starts a kernel."""

import re
from pathlib import Path

import jupytext
import pytest
from jupytext.compare import compare_notebooks
from nbval.plugin import get_sanitize_patterns

from nnseg_nb.runner import list_notebooks, notebook_parameters

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("*.py"))
COLAB_URL = "https://colab.research.google.com/github/nnseg-nb/nnseg_nb/blob/main/notebooks/{}.ipynb"
PACKAGE_URL = "git+https://github.com/nnseg-nb/nnseg_nb"
WIDGET_CALLS = ("SliceBrowser(", "interact(", "interactive(", "interactive_output(")


def _tags(cell) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def check_contract(nb, name: str, path: Path) -> None:
    """The standard first cells and the results.json rule (see notebooks/README.md)."""
    cells = nb.cells
    first = cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "first cell: a markdown title"
    assert COLAB_URL.format(name) in first.source, f"first cell: Colab badge for {name}.ipynb"
    code = [(i, c) for i, c in enumerate(cells) if c.cell_type == "code"]
    installs = [i for i, c in code if PACKAGE_URL in c.source]
    assert installs, "a Colab install cell"
    install = re.sub(r"#.*", "", cells[installs[0]].source)  # code only, not comments
    assert '"google.colab" in sys.modules' in install, "the install runs on Colab only"
    assert "subprocess" in install and "%pip" not in install, (
        "install with subprocess (magics in an if are lost)"
    )
    assert not re.search(r"[\"']-e[\"']|--editable", install), (
        "a non-editable install (editable needs a restart)"
    )
    parameter_cells = [i for i, c in code if "parameters" in _tags(c)]
    assert len(parameter_cells) == 1, "exactly one cell tagged 'parameters'"
    assert installs[0] < parameter_cells[0], "install before parameters"
    params = notebook_parameters(path)
    assert {"profile", "seed", "out_dir"} <= set(params), (
        f"profile, seed and out_dir parameters, got {list(params)}"
    )
    assert params["profile"]["default"] == "auto"
    assert params["out_dir"]["default"] == f"runs/{name}"
    assert any("write_results(" in c.source for _, c in code), (
        "writes results.json with notebook.write_results"
    )
    for i, c in code:
        if any(call in c.source for call in WIDGET_CALLS) and "display(" in c.source:
            assert "nbval-ignore-output" in _tags(c), f"cell {i} shows a widget: tag it nbval-ignore-output"
    assert not any(_tags(c) & {"injected-parameters", "papermill-error-cell-tag"} for c in cells), (
        "papermill output"
    )


def test_notebooks_folder_holds_only_guided_notebooks():
    assert (NOTEBOOKS / "README.md").is_file()
    strays = [p.name for p in SOURCES if not re.fullmatch(r"\d{2}_[a-z0-9_]+\.py", p.name)]
    assert not strays, f"only NN_name.py notebooks belong in notebooks/ (the demo runs them all): {strays}"
    assert list_notebooks(NOTEBOOKS) == SOURCES
    numbers = [p.name[:2] for p in SOURCES]
    assert len(numbers) == len(set(numbers)), f"two notebooks share a number: {numbers}"


def _template_source() -> str:
    readme = (NOTEBOOKS / "README.md").read_text()
    match = re.search(r"<!-- template:begin -->\n```python\n(.*?)```\n<!-- template:end -->", readme, re.S)
    assert match, "notebooks/README.md keeps the template between the template markers"
    return match.group(1)


def test_readme_template_follows_the_contract(tmp_path):
    path = tmp_path / "NN_name.py"
    path.write_text(_template_source())
    nb = jupytext.read(path)
    check_contract(nb, "NN_name", path)
    titles = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert titles[:2] == ["# NN · Title: one line on what this notebook does", "## Setup"]
    device_cell = next(c for c in nb.cells if "device_summary()" in c.source)
    assert "nbval-ignore-output" in _tags(device_cell)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_paired_ipynb_matches_py(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.is_file(), (
        f"{ipynb.name} missing: run `jupytext --sync notebooks/{source.name}` and commit it"
    )
    paired = jupytext.read(ipynb)
    compare_notebooks(paired, jupytext.read(source), fmt="py:percent")
    assert "papermill" not in paired.metadata, f"{ipynb.name} is a papermill output: regenerate it (README)"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_notebook_follows_the_contract(source):
    check_contract(jupytext.read(source), source.stem, source)


SANITIZE_EXAMPLES = [
    ("saved to /tmp/pytest-3/run_0/results.json", "saved to PATH"),
    ("wrote /content/runs/01_data/20261122-184702/executed.ipynb.", "wrote PATH"),
    ("started 2026-11-22T18:47:02 finished", "started DATETIME finished"),
    ("folder 20261122-184702-2 made", "folder TIMESTAMP made"),
    ("<Figure at 0x7f3a2b1c9d80>", "<Figure at 0xADDR>"),
    (" 45%|####      | 9/20 [00:03<00:04,  2.50it/s]", " PROGRESS"),
    (
        "epoch 3 took 12.3 s (450 ms per batch, 2 min in all)",
        "epoch 3 took DURATION (DURATION per batch, DURATION in all)",
    ),
    ("tensor([1.], device='cuda:0')", "tensor([1.], device='DEVICE')"),
    ("device(type='cuda', index=0)", "device(type='DEVICE')"),
    # what must survive: the numbers the notebooks are about
    ("Dice 0.812, spacing (3.0, 0.8, 0.8) mm, patch [64, 128, 128]", None),
    ("median shape 36 x 50 x 35, 4 cases, 2/3 foreground, 5 stages", None),
    ("runs/01_data and nnUNet_raw/Dataset004_Hippocampus", None),
]


@pytest.mark.parametrize("text, expected", SANITIZE_EXAMPLES)
def test_nbval_sanitizers(text, expected):
    patterns = get_sanitize_patterns((REPO / "tests" / "nbval_sanitize.cfg").read_text())
    assert len(patterns) == 10
    result = text
    for regex, replace in patterns:  # nbval applies them in file order
        result = re.sub(regex, replace, result)
    assert result == (text if expected is None else expected)


def test_running_a_notebook_in_jupyter_leaves_the_committed_ipynb_alone():
    """Jupyter (with jupytext) saves a .py notebook to both files of its pair: the pair's .ipynb must be a
    git-ignored working copy, not the committed notebooks/NN_name.ipynb that Colab opens."""
    import subprocess

    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file
    from jupytext.paired_paths import paired_paths

    config = load_jupytext_configuration_file(find_jupytext_configuration_file(str(NOTEBOOKS)))
    formats = config.default_formats(str(SOURCES[0]))
    paired = [Path(path) for path, _ in paired_paths(str(SOURCES[0]), "py:percent", formats)]
    assert paired[0] == SOURCES[0] and len(paired) == 2
    working_copy = paired[1]
    assert working_copy.suffix == ".ipynb" and working_copy != SOURCES[0].with_suffix(".ipynb")
    assert working_copy.is_relative_to(REPO / "runs")
    if (REPO / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", str(working_copy)], cwd=REPO)
        assert ignored.returncode == 0, f"{working_copy} is not git-ignored"


COLAB_BADGE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]\(([^)\s]+)\)"
)
READMES = (REPO / "README.md", NOTEBOOKS / "README.md")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_every_notebook_has_a_readme_badge_opening_its_ipynb(source):
    links = {link for readme in READMES for link in COLAB_BADGE.findall(readme.read_text())}
    assert COLAB_URL.format(source.stem) in links, (
        f"no Colab badge for {source.stem}.ipynb in README.md or notebooks/README.md"
    )


def test_readme_badges_open_existing_notebooks():
    prefix = COLAB_URL.format("")[: -len(".ipynb")]
    for readme in READMES:
        for link in COLAB_BADGE.findall(readme.read_text()):
            assert link.startswith(prefix) and link.endswith(".ipynb"), (readme.name, link)
            ipynb = NOTEBOOKS / link.removeprefix(prefix)
            if ipynb.name != "NN_name.ipynb":  # the template's placeholder
                assert ipynb.is_file() and ipynb.with_suffix(".py").is_file(), (readme.name, link)


def test_readme_opens_with_the_quickstart_badge():
    """The first thing a visitor sees under the title is the badge that opens 00_quickstart in Colab."""
    title, blank, first = (REPO / "README.md").read_text().split("\n")[:3]
    assert title.startswith("# ") and not blank.strip(), "README.md: a title line, then an empty line"
    badge = COLAB_BADGE.match(first)
    assert badge and badge.group(1) == COLAB_URL.format("00_quickstart"), (
        f"README.md: the line after the title must start with 00_quickstart's Colab badge, got {first[:80]!r}"
    )
