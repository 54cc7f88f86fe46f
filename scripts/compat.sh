#!/usr/bin/env bash
# Run the test suite on the oldest versions pyproject.toml declares ("floors"), on a Colab-like
# environment, or a cheap floors check for CI ("floors-lite"), in a virtual environment of its own:
#
#   scripts/compat.sh floors            # Python 3.10, torch 2.2.0, numpy 1.26.0, scipy 1.11.1, matplotlib 3.8.0,
#                                       # ipywidgets 7.7.0, nibabel 5.0.0, SimpleITK 2.3.0, pillow 9.0.0, tqdm 4.60.0
#   scripts/compat.sh colab             # Python 3.12, ipywidgets 7.7.1, numpy 2.0.2 (Colab's, 2026-07)
#   scripts/compat.sh floors-lite       # the machine's python3 and torch 2.13.0 (a local CPU wheel on CI), the
#                                       # other floors (pillow 9.2.0: 9.0.0 has no Python 3.11 wheel); a
#                                       # version-sensitive subset of the tests, and a Python 3.10 syntax check
#   scripts/compat.sh floors tests/test_io.py -x    # pytest arguments after the profile
#
# Default pytest arguments: the whole suite (unit tests and the notebooks under nbval), two workers;
# floors-lite: its subset (FLOORS_LITE_TESTS below), two workers.
# The venv is .venv-compat-<profile> (kept, so a second run installs nothing). torch comes from
# PyTorch's CPU index when it is reachable, else from PyPI (the CUDA build: a few GB more).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile="${1:-}"
shift || true
case "$profile" in
    floors)
        python_version=3.10
        # the lowest release of each floor that the package index has
        pins=(torch==2.2.0 numpy==1.26.0 scipy==1.11.1 matplotlib==3.8.0 ipywidgets==7.7.0 nibabel==5.0.0
              SimpleITK==2.3.0 pillow==9.0.0 tqdm==4.60.0) ;;
    colab)
        python_version=3.12
        pins=(torch numpy==2.0.2 ipywidgets==7.7.1 matplotlib==3.10.0 nibabel==5.4.2) ;;
    floors-lite)
        python_version=""  # the machine's python3
        pins=(torch==2.13.0 numpy==1.26.0 scipy==1.11.1 matplotlib==3.8.0 ipywidgets==7.7.0 nibabel==5.0.0
              SimpleITK==2.3.0 pillow==9.2.0 tqdm==4.60.0) ;;
    *) echo "usage: scripts/compat.sh floors|colab|floors-lite [pytest arguments]" >&2; exit 1 ;;
esac

# What changes with the versions: reading images and nnU-Net's files (pickles, .b2nd), numpy's sums and
# resampling (fingerprint, preprocessing, planning parity), checkpoints, ipywidgets and matplotlib (the
# plan widget and figures), and notebooks 01-02. The README-figures test is left out (50 s of drawing).
FLOORS_LITE_TESTS=(tests/test_io.py tests/test_fingerprint.py tests/test_preprocessing.py tests/test_preprocessed.py
    tests/test_loader.py tests/test_cli_plan.py tests/test_planning.py tests/test_plan_dataset.py
    tests/test_ensemble.py tests/test_postprocessing.py tests/test_predict.py tests/test_viz.py
    tests/test_viz_plans.py notebooks/01_data.ipynb notebooks/02_fingerprint_and_planning.ipynb
    -m "not slow" --deselect tests/test_viz_plans.py::test_readme_figures_script_draws_both_figures)
pytest_args=("$@")
if [ ${#pytest_args[@]} -eq 0 ]; then
    pytest_args=(-n 2)
    [ "$profile" != floors-lite ] || pytest_args+=("${FLOORS_LITE_TESTS[@]}")
fi

# An interpreter of a version (3.10, ...): on PATH, or from pyenv. Prints nothing when there is none.
find_python() {
    local candidate
    for candidate in "python$1" "$HOME/.pyenv/versions/$1"*/bin/python; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$1'.split('.'))))" 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
}

if [ -z "$python_version" ]; then
    python=python3
else
    python="$(find_python "$python_version")"
    if [ -z "$python" ]; then
        echo "error: no Python $python_version (install it, e.g. pyenv install $python_version or apt-get install python$python_version)" >&2
        exit 1
    fi
fi

# floors-lite runs a newer Python than the floor: at least check that the code's syntax is 3.10's
# (compiled in memory, nothing written). Newer standard-library names (tomllib, ...) are not caught here.
if [ "$profile" = floors-lite ]; then
    python310="$(find_python 3.10)"
    if [ -n "$python310" ]; then
        echo "Python 3.10 syntax check ($("$python310" -V)): nnseg_nb, tests, notebooks/*.py, scripts"
        "$python310" - <<'EOF'
from pathlib import Path
folders = [Path("nnseg_nb").rglob("*.py"), Path("tests").rglob("*.py"), Path("notebooks").glob("*.py"), Path("scripts").glob("*.py")]
files = [file for folder in folders for file in folder]
for file in files:
    compile(file.read_text(encoding="utf-8"), str(file), "exec", dont_inherit=True)
print(f"{len(files)} files compile")
EOF
    else
        echo "no Python 3.10 on PATH or in pyenv: the 3.10 syntax check is skipped"
    fi
fi

venv=".venv-compat-$profile"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q)
"${pip[@]}" --upgrade pip
torch_pin="${pins[0]}"
if ! "${pip[@]}" --retries 0 --timeout 10 "$torch_pin" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null; then
    echo "PyTorch's CPU index not reachable: $torch_pin from PyPI"
    "${pip[@]}" "$torch_pin"
fi
constraints="$venv/constraints.txt"
printf '%s\n' "${pins[@]:1}" > "$constraints"
# the installed distribution's version (torch.__version__ may say 2.2.0+cu121 where pip knows 2.2.0)
echo "torch==$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("torch"))')" >> "$constraints"
"${pip[@]}" -c "$constraints" "${pins[@]:1}"
"${pip[@]}" -c "$constraints" -e ".[dev]"
"$venv/bin/python" - <<'EOF'
import sys
from importlib.metadata import version
names = ["torch", "numpy", "scipy", "matplotlib", "ipywidgets", "nibabel", "SimpleITK", "pillow", "tqdm"]
print(f"python {sys.version.split()[0]}; " + ", ".join(f"{n} {version(n)}" for n in names))
EOF
echo "pytest ${pytest_args[*]}"
"$venv/bin/python" -m pytest "${pytest_args[@]}"
