"""The examples in the library's docstrings are run, so they cannot rot."""

import doctest
import importlib
import pkgutil

import pytest

import nnseg_nb

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(nnseg_nb.__path__, "nnseg_nb.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write here
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} docstring examples failed in {module_name}"
    )
