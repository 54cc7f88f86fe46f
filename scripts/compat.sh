#!/usr/bin/env bash
# Run the test suite on the oldest versions pyproject.toml declares ("floors"), or on a Colab-like
# environment, in a virtual environment of its own:
#
#   scripts/compat.sh floors            # Python 3.10, torch 2.2.0, numpy 1.26.0, scipy 1.11.1, matplotlib 3.8.0,
#                                       # ipywidgets 7.7.0, nibabel 5.0.0, SimpleITK 2.3.0, pillow 9.0.0, tqdm 4.60.0
#   scripts/compat.sh colab             # Python 3.12, ipywidgets 7.7.1, numpy 2.0.2 (Colab's, 2026-07)
#   scripts/compat.sh floors tests/test_io.py -x    # pytest arguments after the profile
#
# Default pytest arguments: the whole suite (unit tests and the notebooks under nbval), two workers.
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
    *) echo "usage: scripts/compat.sh floors|colab [pytest arguments]" >&2; exit 1 ;;
esac
pytest_args=("$@")
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=(-n 2)

# An interpreter of that version: on PATH, or from pyenv.
python=""
for candidate in "python$python_version" "$HOME/.pyenv/versions/$python_version"*/bin/python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$python_version'.split('.'))))" 2>/dev/null; then
        python="$candidate"
        break
    fi
done
if [ -z "$python" ]; then
    echo "error: no Python $python_version (install it, e.g. pyenv install $python_version or apt-get install python$python_version)" >&2
    exit 1
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
"$venv/bin/python" -m pytest "${pytest_args[@]}"
