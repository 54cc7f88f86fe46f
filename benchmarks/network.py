"""One training step's network work: nnseg_nb's U-Net against dynamic-network-architectures', same weights.

    $NNUNET_PY benchmarks/network.py --out network.json [--config 3d_fullres] [--rounds 3]

Builds a configuration of the demo brain plans (``Dataset901_BrainTissue``, planned by nnunetv2; shipped
in ``nnseg_nb/demo_assets``) twice in one process: nnU-Net's network with ``get_network_from_plans``
(seed 0) and ours with ``network.build_network``. Before timing it checks what parity promises: nnU-Net's
state dict loads into ours with ``strict=True`` and ours into nnU-Net's, and both give the same
deep-supervision outputs for one input. Then it times forward + backward (fp32, deep supervision on, the
loss a sum over all outputs, gradients zeroed between steps) at the plans' patch size and batch size,
the two libraries interleaved round by round (who goes first alternates); each keeps its fastest
round, and the medians are reported too.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nnseg_nb.network import build_network  # noqa: E402
from nnseg_nb.plans import load_plans  # noqa: E402

PLANS = ROOT / "nnseg_nb" / "demo_assets" / "nnUNetPlans_Dataset901_by_nnunetv2.json"
INPUT_CHANNELS, NUM_CLASSES = 1, 3  # the demo brain: T1; background, gray and white matter


def networks(config: str):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    configuration = load_plans(PLANS).configuration(config)
    arch = configuration.architecture
    torch.manual_seed(0)
    nnunet = get_network_from_plans(
        arch.network_class_name, arch.arch_kwargs, arch.kw_requires_import, INPUT_CHANNELS, NUM_CLASSES,
        deep_supervision=True,
    )  # fmt: skip
    ours = build_network(arch, INPUT_CHANNELS, NUM_CLASSES, deep_supervision=True)
    return configuration, nnunet, ours


def check_parity(nnunet: torch.nn.Module, ours: torch.nn.Module, shape: list[int]) -> float:
    """Weights load both ways with strict=True; the largest output difference for one input."""
    ours.load_state_dict(nnunet.state_dict(), strict=True)
    nnunet.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pairs = list(zip(nnunet(x), ours(x)))
    assert [a.shape for a, _ in pairs] == [b.shape for _, b in pairs]
    return max(float((a - b).abs().max()) for a, b in pairs)


def step_seconds(network: torch.nn.Module, x: torch.Tensor) -> float:
    network.zero_grad(set_to_none=True)
    start = time.perf_counter()
    outputs = network(x)
    sum(o.mean() for o in outputs).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="3d_fullres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=None, help="default: the plans' batch size")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    configuration, nnunet, ours = networks(args.config)
    batch_size = args.batch_size or configuration.batch_size
    shape = [batch_size, INPUT_CHANNELS, *configuration.patch_size]
    max_difference = check_parity(nnunet, ours, shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    for network in (nnunet, ours):  # warm-up: allocator, oneDNN primitives
        step_seconds(network, x)
    times = {"nnunet": [], "nnseg_nb": []}
    for round_index in range(args.rounds):
        order = [("nnunet", nnunet), ("nnseg_nb", ours)]
        for name, network in order if round_index % 2 == 0 else order[::-1]:  # who goes first alternates
            times[name].append(step_seconds(network, x))
    result = {
        "config": args.config,
        "input": shape,
        "parameters": sum(p.numel() for p in ours.parameters()),
        "max_output_difference": max_difference,
        "seconds_per_step": {k: min(v) for k, v in times.items()},
        "median_seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
        "rounds": times,
        "ratio_nnunet_over_ours": min(times["nnunet"]) / min(times["nnseg_nb"]),
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
