#!/usr/bin/env bash
# Install nnseg_nb from this clone into a virtual environment, in one step:
#
#   scripts/install.sh                  # .venv with ".[dev]"; then: .venv/bin/nnseg-nb demo
#   scripts/install.sh --dry-run        # print the commands, run nothing
#
# torch comes first, and its build follows the machine: on Linux without an NVIDIA GPU (no working
# `nvidia-smi`) it is the CPU build from PyTorch's CPU index (a 1.7 GB dev venv instead of 6.1 GB with
# the CUDA libraries PyPI's Linux wheel pulls in); with a GPU, or on macOS and Windows (where PyPI's
# wheel has no CUDA libraries), pip's default index. Then the package itself, editable, which keeps
# that torch (it asks only for torch>=2.2). Colab does not use this: its notebooks' first cell
# installs the package and keeps Colab's own torch.
#
# Options:
#   --venv DIR         the virtual environment (default .venv; created if missing)
#   --python PY        the interpreter that creates it (default python3)
#   --extras LIST      the package's extras (default dev; "" for none)
#   --torch SPEC       the torch requirement (default torch; e.g. torch==2.13.0)
#   --torch-index X    auto (default: cpu without an NVIDIA GPU on Linux, else pypi), cpu, pypi, or a URL
#   --dry-run          print what would run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CPU_INDEX="https://download.pytorch.org/whl/cpu"
venv=".venv" python="python3" extras="dev" torch="torch" torch_index="auto" dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) venv="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --extras) extras="$2"; shift 2 ;;
        --torch) torch="$2"; shift 2 ;;
        --torch-index) torch_index="$2"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done

has_nvidia_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

auto_index=0
if [ "$torch_index" = "auto" ]; then
    auto_index=1
    if [ "$(uname -s)" = "Linux" ] && ! has_nvidia_gpu; then
        torch_index="cpu"
    else
        torch_index="pypi"
    fi
fi
case "$torch_index" in
    cpu) index_args=(--index-url "$CPU_INDEX"); why="no NVIDIA GPU: the CPU build" ;;
    pypi) index_args=(); why="pip's default index" ;;
    *) index_args=(--index-url "$torch_index"); why="index $torch_index" ;;
esac

run() {
    echo "+ $*"
    if [ "$dry_run" = 0 ]; then "$@"; fi
}

target="."
[ -n "$extras" ] && target=".[$extras]"
echo "torch: $torch from $why"
[ -x "$venv/bin/python" ] || run "$python" -m venv "$venv"
run "$venv/bin/python" -m pip install -q --upgrade pip
if [ "$torch_index" = "cpu" ] && [ "$auto_index" = 1 ]; then
    # Where PyTorch's index cannot be reached (a mirror of PyPI only), fall back to pip's default index
    # rather than fail: the install still works, only larger where PyPI's wheel is a CUDA build.
    run "$venv/bin/python" -m pip install -q --timeout 20 --retries 1 "$torch" "${index_args[@]}" || {
        echo "torch: PyTorch's CPU index is not reachable; taking $torch from pip's default index"
        run "$venv/bin/python" -m pip install -q "$torch"
    }
else
    run "$venv/bin/python" -m pip install -q "$torch" "${index_args[@]}"
fi
run "$venv/bin/python" -m pip install -q -e "$target"
echo "installed: $venv/bin/nnseg-nb (try: $venv/bin/nnseg-nb demo)"
