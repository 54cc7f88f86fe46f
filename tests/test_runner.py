"""The notebook runner on tiny throwaway notebooks: parameters, failures, cwd, batches, the demo index.

Kernel launches are expensive (~2 s each), so only seven tests start one; the rest check what
happens before a kernel would start, or replace the run with a fake.
"""

import json
import os
import sys
import types
from pathlib import Path

import jupytext
import nbformat
import pytest

from nnseg_nb import runner
from nnseg_nb.cli import main
from nnseg_nb.runner import NotebookError, RunResult

TINY = """# %% [markdown]
# # A tiny notebook for the runner tests

# %% tags=["parameters"]
a: int = 1  # an integer
b = "x"  # a string
sizes = [1, 2]
fail = False
out_dir = "runs/tiny"

# %%
import os
from nnseg_nb.notebook import write_results
results = {"a_seen": a, "b_seen": b, "sizes_seen": sizes, "cwd": os.getcwd(),
           "env": os.environ.get("NNSEG_TEST_VAR"), "tqdm_disable": os.environ.get("TQDM_DISABLE")}
write_results(out_dir, results)

# %%
if fail:
    raise ValueError(f"asked to fail with a={a}")
"""
FAIL_LINE = TINY.splitlines().index("if fail:") + 1


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The notebook as tmp/src/tiny.py, and tmp/ as the working directory (runs/ lands there)."""
    source = tmp_path / "src" / "tiny.py"
    source.parent.mkdir()
    source.write_text(TINY)
    monkeypatch.chdir(tmp_path)
    return source


def test_notebook_parameters_read_from_py(tiny):
    params = runner.notebook_parameters(tiny)
    assert list(params) == ["a", "b", "sizes", "fail", "out_dir"]
    assert params["a"] == {"default": 1, "type": "int", "help": "an integer"}
    assert params["sizes"]["default"] == [1, 2] and params["b"]["help"] == "a string"


def test_py_run_injects_parameters_env_and_default_folders(tiny, tmp_path):
    environ_before = dict(os.environ)
    result = runner.run_notebook(tiny, parameters={"a": 5, "sizes": [64, 32]}, env={"NNSEG_TEST_VAR": "yes"})
    run_dir = tmp_path / "runs" / "tiny" / "a=5_sizes=64x32"
    assert result.status == "ok" and Path(result.output) == run_dir / "executed.ipynb"
    assert result.results["a_seen"] == 5 and result.results["sizes_seen"] == [64, 32]
    assert result.results["b_seen"] == "x"  # default kept
    assert result.results["cwd"] == str(run_dir)  # kernel cwd: the run folder
    assert result.parameters["out_dir"] == str(run_dir)  # out_dir injected: results next to the notebook
    assert (run_dir / "results.json").is_file() and not (
        run_dir / "executed.log"
    ).exists()  # empty kernel log removed
    assert result.results["env"] == "yes" and result.results["tqdm_disable"] == "1"
    assert dict(os.environ) == environ_before  # the caller's environment is untouched
    executed = nbformat.read(result.output, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "a = 5" in injected[0].source
    assert "widgets" not in executed.metadata  # store_widget_state=False
    assert 0 < result.duration_s < 120


def test_ipynb_run_respects_cwd_and_output(tiny, tmp_path):
    ipynb = tiny.with_suffix(".ipynb")
    jupytext.write(jupytext.read(tiny), ipynb)
    workdir = tmp_path / "work"
    workdir.mkdir()
    output = tmp_path / "elsewhere" / "out.ipynb"
    result = runner.run_notebook(ipynb, output=output, cwd=workdir, parameters={"b": "from-ipynb"})
    assert output.is_file() and result.cwd == str(workdir)
    assert result.results["cwd"] == str(workdir) and result.results["b_seen"] == "from-ipynb"
    assert (output.parent / "results.json").is_file()


def test_failing_cell_is_named(tiny):
    with pytest.raises(NotebookError) as caught:
        runner.run_notebook(tiny, parameters={"a": 7, "fail": True})
    error = caught.value
    assert (error.cell_index, error.ename, error.evalue) == (3, "ValueError", "asked to fail with a=7")
    assert error.line == FAIL_LINE and error.exec_count == 4  # the injected cell ran as [2]
    assert error.source_head[0] == "if fail:"
    assert error.summary.startswith(
        f"{tiny}: cell 3 (line {FAIL_LINE}) failed: ValueError: asked to fail with a=7"
    )
    assert "\n" not in error.summary and "Traceback" not in str(error)
    assert error.result.status == "error" and error.result.error == error.summary
    executed = nbformat.read(error.output, as_version=4)
    assert any(o.output_type == "error" for c in executed.cells for o in c.get("outputs", []))


def test_bad_requests_fail_before_any_kernel(tiny, tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown parameter\(s\) c, lr; its parameters are: a, b, sizes, fail, out_dir"
    ):
        runner.run_notebook(tiny, parameters={"lr": 1, "c": 2})
    with pytest.raises(ValueError, match="unknown parameter"):
        runner.run_batch(tiny, {"a": [1, 2], "typo": [0]})
    with pytest.raises(ValueError, match="must be a list"):
        runner.run_batch(tiny, {"a": 1})
    with pytest.raises(ValueError, match="next to its source notebook"):
        runner.run_notebook(tiny, output=tiny.with_suffix(".ipynb"))
    with pytest.raises(NotADirectoryError):
        runner.run_notebook(tiny, cwd=tmp_path / "missing")
    assert not (tmp_path / "runs").exists()


def test_batch_2x2_collects_four_runs(tiny, tmp_path):
    rows = runner.run_batch(tiny, {"a": [1, 2], "b": ["x", "y"]}, workers=2, parameters={"sizes": [3]})
    assert [(r["a"], r["b"]) for r in rows] == [(1, "x"), (1, "y"), (2, "x"), (2, "y")]
    assert all(r["status"] == "ok" and r["error"] is None for r in rows)
    assert [(r["a_seen"], r["b_seen"], r["sizes_seen"]) for r in rows] == [
        (1, "x", [3]),
        (1, "y", [3]),
        (2, "x", [3]),
        (2, "y", [3]),
    ]
    batch_dir = tmp_path / "runs" / "tiny"
    assert [r["run_dir"] for r in rows] == [str(batch_dir / f"a={a}_b={b}") for a in (1, 2) for b in "xy"]
    assert [r["cwd"] for r in rows] == [r["run_dir"] for r in rows]  # each kernel ran in its own folder
    status = json.loads((batch_dir / "a=2_b=y" / "status.json").read_text())
    assert status["params"] == {"a": 2, "b": "y"} and status["status"] == "ok" and status["duration_s"] > 0
    assert json.loads((batch_dir / "batch_results.json").read_text()) == rows
    lines = (batch_dir / "batch_results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["run"] for line in lines) == sorted(r["run"] for r in rows)


def _demo_notebooks(folder: Path) -> None:
    folder.mkdir()
    params = '# %% tags=["parameters"]\nprofile = "auto"\nout_dir = "runs/x"\n'
    (folder / "01_first.py").write_text(params + "seed = 0\n")
    (folder / "02_second.py").write_text(params)
    (folder / "helpers.py").write_text("x = 1\n")  # not a guided notebook
    (folder / "README.md").write_text("notebooks\n")


def test_run_demo_writes_index(tmp_path, monkeypatch):
    folder = tmp_path / "nbs"
    _demo_notebooks(folder)
    built, calls = [], []
    fake_data = types.ModuleType("nnseg_nb.demo_data")
    fake_data.build_demo_datasets = lambda raw: built.append(raw) or {"Dataset990_Demo": 4}
    monkeypatch.setitem(sys.modules, "nnseg_nb.demo_data", fake_data)

    def fake_run(notebook, output, parameters, env, **kwargs):  # what a kernel would have done
        calls.append((Path(notebook).name, dict(parameters), dict(env)))
        result = RunResult(str(notebook), str(output), str(Path(output).parent), parameters, duration_s=1.5)
        if "second" in str(notebook):
            result.status, result.error = "error", f"{notebook}: cell 2 failed: KeyError: 'x'"
            raise NotebookError(notebook, "KeyError", "'x'", 2, result=result)
        result.results = {"dice": 0.81234, "per_class": {"1": 0.8}, "n_cases": 4}
        return result

    monkeypatch.setattr(runner.execute, "run_notebook", fake_run)  # run_demo runs it from there
    out = tmp_path / "demo"
    with pytest.raises(ValueError, match="unknown parameter"):
        runner.run_demo(out, notebooks_folder=folder, parameters={"nope": 1})
    assert not built  # checked before building anything

    index = runner.run_demo(out, notebooks_folder=folder, parameters={"seed": 3}, data_root=tmp_path / "data")
    assert built == [tmp_path / "data" / "raw"] and "nnUNet_raw" not in os.environ
    assert [c[0] for c in calls] == ["01_first.py", "02_second.py"]
    assert calls[0][1] == {"profile": "quick", "seed": 3} and calls[1][1] == {"profile": "quick"}
    assert calls[0][2]["nnUNet_results"] == str(tmp_path / "data" / "results")
    assert [(e["notebook"], e["status"]) for e in index["notebooks"]] == [
        ("01_first", "ok"),
        ("02_second", "error"),
    ]
    assert index["notebooks"][0]["headline"] == {"dice": 0.81234, "n_cases": 4}
    assert json.loads((out / "index.json").read_text()) == index
    markdown = (out / "index.md").read_text()
    assert "| 1 | [01_first](01_first/executed.ipynb) | ok | 1.5 s | dice = 0.8123, n_cases = 4 |" in markdown
    assert (
        "| 2 | [02_second](02_second/executed.ipynb) | error | 1.5 s |" in markdown and "KeyError" in markdown
    )
    assert json.loads((out / "02_second" / "status.json").read_text())["status"] == "error"


def test_list_notebooks_order_and_missing_folder(tmp_path):
    folder = tmp_path / "nbs"
    _demo_notebooks(folder)
    jupytext.write(jupytext.read(folder / "02_second.py"), folder / "02_second.ipynb")
    jupytext.write(jupytext.read(folder / "02_second.py"), folder / "03_third.ipynb")
    assert [p.name for p in runner.list_notebooks(folder)] == [
        "01_first.py",
        "02_second.py",
        "03_third.ipynb",
    ]
    with pytest.raises(FileNotFoundError, match="no such notebooks folder"):
        runner.list_notebooks(tmp_path / "none")


def test_cli_errors_are_one_line(tiny, monkeypatch, capsys):
    assert main(["run", str(tiny), "-p", "lr", "0.1"]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0

    def failing_run(notebook, **kwargs):
        raise NotebookError(
            notebook, "ValueError", "boom\nsecond line", 3, 4, FAIL_LINE, ["if fail:"], "runs/x.ipynb"
        )

    monkeypatch.setattr(runner, "run_notebook", failing_run)
    assert main(["run", str(tiny), "-p", "sizes", "[64,64,64]"]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {tiny}: cell 3 (line {FAIL_LINE}) failed: ValueError: boom (traceback in runs/x.ipynb)\n"
    )
    assert main(["batch", str(tiny), "--grid", "a=1,2", "--grid", "typo=[1,2],[3]"]) == 1
    assert "unknown parameter(s) typo" in capsys.readouterr().err


WIDGET_CELL = """
# %% tags=["nbval-ignore-output"]
import numpy as np
from nnseg_nb.viz import SliceBrowser
browser = SliceBrowser(np.arange(24.0).reshape(2, 3, 4))
display(browser); browser.show_static()
print("cwd:", os.path.basename(os.getcwd()))
"""


def test_record_outputs_writes_a_golden_pair(tmp_path):
    from jupytext.compare import compare_notebooks

    source = tmp_path / "notebooks" / "01_tiny.py"
    source.parent.mkdir()
    source.write_text(TINY + WIDGET_CELL)
    assert runner.record_outputs(source) == source.with_suffix(".ipynb")
    golden = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    compare_notebooks(jupytext.read(source.with_suffix(".ipynb")), jupytext.read(source), fmt="py:percent")
    assert "widgets" not in golden.metadata and "papermill" not in golden.metadata
    assert [c.metadata.get("tags") for c in golden.cells if c.metadata.get("tags")] == [
        ["parameters"],
        ["nbval-ignore-output"],
    ]
    widget_outputs = golden.cells[-1].outputs
    kinds = [sorted(o.get("data", {})) for o in widget_outputs if o.output_type == "display_data"]
    # the widget's view is gone (no state to render it), its static picture stays: what readers see first
    assert kinds == [["image/png", "text/plain"], ["image/png", "text/plain"]]
    assert widget_outputs[0].data["text/plain"].startswith("SliceBrowser: image")
    assert widget_outputs[-1].text == "cwd: notebooks\n"  # ran in the notebook's folder, like nbval
    assert json.loads((source.parent / "runs" / "tiny" / "results.json").read_text())["a_seen"] == 1


def test_demo_and_runs_share_the_clones_data_root(tmp_path, monkeypatch):
    """Without a data_root the demo uses the roots the CLI and the notebooks use: <clone>/nnseg_data."""
    clone = tmp_path / "clone"
    (clone / "notebooks").mkdir(parents=True)
    (clone / "pyproject.toml").write_text('[project]\nname = "nnseg-nb"\n')
    folder = tmp_path / "nbs"
    _demo_notebooks(folder)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(clone / "notebooks")  # e.g. a terminal opened in notebooks/
    built, envs = [], []
    fake_data = types.ModuleType("nnseg_nb.demo_data")
    fake_data.build_demo_datasets = lambda raw: built.append(raw) or {}
    monkeypatch.setitem(sys.modules, "nnseg_nb.demo_data", fake_data)

    def fake_run(notebook, output, parameters, env, **kwargs):
        envs.append(dict(env))
        return RunResult(str(notebook), str(output), str(Path(output).parent), parameters)

    monkeypatch.setattr(runner.execute, "run_notebook", fake_run)  # run_demo runs it from there
    index = runner.run_demo(notebooks_folder=folder)
    assert built == [clone / "nnseg_data" / "raw"]
    assert (
        envs[0]
        == runner.data_root_env()
        == {
            var: str(clone / "nnseg_data" / sub)
            for var, sub in zip(
                ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"), ("raw", "preprocessed", "results")
            )
        }
    )
    assert Path(index["out_root"]) == clone / "runs" / "demo"
    assert "Raw data in `nnseg_data/raw`" in (clone / "runs" / "demo" / "index.md").read_text()
    assert (
        runner.default_output("x/01_a.py", {"seed": 1})
        == clone / "runs" / "01_a" / "seed=1" / "executed.ipynb"
    )


def test_default_notebooks_folder_is_the_checkouts():
    repository = Path(__file__).resolve().parents[1]
    assert runner.notebooks_folder() == repository / "notebooks"
    assert runner.list_notebooks()[0].name == "00_quickstart.py"
