"""Fingerprint extraction: nnseg_nb against nnU-Net v2 on the demo datasets (time, peak memory, equality).

    $NNUNET_PY benchmarks/fingerprint.py --out fingerprint.json [--workers 2] [--rounds 3]

Builds the demo datasets (seed 0, training cases only) in a temporary folder. For each dataset and round,
each library runs in a fresh Python process (so imports and worker start-up count, as they do for a user
of ``nnUNetv2_extract_fingerprint`` or ``nnseg-nb fingerprint``), the two interleaved; the fastest round is
kept. Peak memory is the largest resident set of one process: the main one or any of its workers
(``ru_maxrss``). The two JSON files are compared value by value.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the largest resident set of the process and of its (waited-for) workers, in KB, as the last line
PEAK = """
import resource
print(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
"""

NNUNET = (
    """
import sys
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
extract_fingerprint_dataset(int(sys.argv[1]), num_processes=int(sys.argv[2]), clean=True, verbose=False)
"""
    + PEAK
)

NNSEG = (
    """
import sys
sys.path.insert(0, sys.argv[3])
from nnseg_nb.fingerprint import ensure_fingerprint
ensure_fingerprint(sys.argv[1], overwrite=True, output=sys.argv[4], num_workers=int(sys.argv[2]), progress=False)
"""
    + PEAK
)


def _timed(script: str, args: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, the largest single process) of one fresh process running ``script``."""
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, check=True, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    return seconds, int(completed.stdout.strip().splitlines()[-1]) / 1024


def _differences(ours: dict, theirs: dict, where: str = "") -> list[str]:
    if isinstance(theirs, dict):
        keys = set(ours) | set(theirs)
        return [d for k in sorted(keys) for d in _differences(ours.get(k), theirs.get(k), f"{where}/{k}")]
    if isinstance(theirs, list) and isinstance(ours, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in _differences(a, b, f"{where}[{i}]")]
    return [] if ours == theirs else [f"{where}: {ours!r} != {theirs!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per library, fastest kept (default 3)")
    parser.add_argument("--only", nargs="*", default=None, help="demo datasets to run (names or ids)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from nnseg_nb.demo_data import build_demo_datasets

    work = Path(tempfile.mkdtemp())
    env = {
        **os.environ,
        "nnUNet_raw": str(work / "raw"),
        "nnUNet_preprocessed": str(work / "preprocessed"),
        "nnUNet_results": str(work / "results"),
    }
    rows = []
    for name, raw in build_demo_datasets(work / "raw", only=args.only, num_test=0, progress=False).items():
        dataset_id = name[len("Dataset") : len("Dataset") + 3]
        ours_file = work / "ours" / f"{name}.json"
        theirs_file = work / "preprocessed" / name / "dataset_fingerprint.json"
        times = {"nnunetv2": [], "nnseg_nb": []}
        peaks = {"nnunetv2": [], "nnseg_nb": []}
        for _ in range(args.rounds):
            for library, script, extra in (
                ("nnunetv2", NNUNET, []),
                ("nnseg_nb", NNSEG, [str(ROOT), str(ours_file)]),
            ):
                seconds, peak = _timed(
                    script,
                    [dataset_id if library == "nnunetv2" else str(raw), str(args.workers), *extra],
                    env,
                )
                times[library].append(seconds)
                peaks[library].append(peak)
        differences = _differences(json.loads(ours_file.read_text()), json.loads(theirs_file.read_text()))
        row = {
            "dataset": name,
            "workers": args.workers,
            "nnunetv2_s": min(times["nnunetv2"]),
            "nnseg_nb_s": min(times["nnseg_nb"]),
            "ratio": min(times["nnunetv2"]) / min(times["nnseg_nb"]),
            "peak_rss_mb": {k: max(v) for k, v in peaks.items()},
            "differences": differences,
        }
        rows.append(row)
        print(
            f"{name}: nnunetv2 {row['nnunetv2_s']:.2f} s, nnseg_nb {row['nnseg_nb_s']:.2f} s ({row['ratio']:.2f}x); "
            f"peak RSS {row['peak_rss_mb']['nnunetv2']:.0f} MB vs {row['peak_rss_mb']['nnseg_nb']:.0f} MB; "
            f"{'identical' if not differences else f'{len(differences)} differences, e.g. {differences[0]}'}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
