"""The plans file as data: nnU-Net's ``nnUNetPlans.json`` as dataclasses, read, written and resolved.

    plans = load_plans(preprocessed / "nnUNetPlans.json")     # ours or nnU-Net's, key for key
    fullres = plans.configuration("3d_fullres")                # inherits_from resolved
    fullres.patch_size, fullres.architecture.n_stages          # [128, 128, 128], 6
    save_plans(plans, path)                                    # nnU-Net's layout: key order kept, indent 4

The planner (``planning.plan``) makes these; preprocessing, training, inference and the figures read
them. Nothing here decides a number: it is the contract between stages.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nnseg_nb.utils import atomic_write_json, load_json


def _take(data: dict, keys: Sequence[str]) -> tuple[dict, dict]:
    """Split ``data`` into the known ``keys`` and everything else (kept for the round trip)."""
    return {k: data[k] for k in keys if k in data}, {k: v for k, v in data.items() if k not in keys}


@dataclass
class ArchitecturePlan:
    """A configuration's network: the class and its constructor arguments (``architecture``)."""

    network_class_name: str  # dotted, e.g. network.PLAIN_CONV_UNET
    arch_kwargs: dict  # n_stages, features_per_stage, kernel_sizes, strides, ...
    kw_requires_import: list[str] = field(
        default_factory=list
    )  # "_kw_requires_import": values that are dotted names
    extra: dict = field(default_factory=dict)  # unknown keys, kept

    @property
    def n_stages(self) -> int:
        return self.arch_kwargs["n_stages"]

    @property
    def features_per_stage(self) -> list[int]:
        return self.arch_kwargs["features_per_stage"]

    @property
    def kernel_sizes(self) -> list[list[int]]:
        return self.arch_kwargs["kernel_sizes"]

    @property
    def strides(self) -> list[list[int]]:
        return self.arch_kwargs["strides"]

    @property
    def blocks_per_stage(self) -> list[int]:
        """Convs per encoder stage (plain U-Net) or residual blocks per stage (ResEnc)."""
        return self.arch_kwargs.get("n_conv_per_stage", self.arch_kwargs.get("n_blocks_per_stage"))

    @property
    def n_conv_per_stage_decoder(self) -> list[int]:
        return self.arch_kwargs["n_conv_per_stage_decoder"]

    @classmethod
    def from_json(cls, data: dict) -> ArchitecturePlan:
        known, extra = _take(data, ("network_class_name", "arch_kwargs", "_kw_requires_import"))
        if "network_class_name" not in known or "arch_kwargs" not in known:
            raise ValueError("an architecture needs network_class_name and arch_kwargs")
        return cls(
            known["network_class_name"],
            copy.deepcopy(known["arch_kwargs"]),
            list(known.get("_kw_requires_import", [])),
            copy.deepcopy(extra),
        )

    def to_json(self) -> dict:
        return {
            "network_class_name": self.network_class_name,
            "arch_kwargs": copy.deepcopy(self.arch_kwargs),
            "_kw_requires_import": list(self.kw_requires_import),
            **copy.deepcopy(self.extra),
        }


# A configuration's keys in nnU-Net's order; a field left None is not written.
_CONFIGURATION_KEYS = (
    "inherits_from",
    "data_identifier",
    "preprocessor_name",
    "batch_size",
    "patch_size",
    "median_image_size_in_voxels",
    "spacing",
    "normalization_schemes",
    "use_mask_for_norm",
    "resampling_fn_data",
    "resampling_fn_seg",
    "resampling_fn_data_kwargs",
    "resampling_fn_seg_kwargs",
    "resampling_fn_probabilities",
    "resampling_fn_probabilities_kwargs",
    "architecture",
    "batch_dice",
    "previous_stage",
    "next_stage",
)
# What a configuration needs once its inherits_from chain is resolved.
_REQUIRED_CONFIGURATION_KEYS = (
    "data_identifier",
    "batch_size",
    "patch_size",
    "spacing",
    "normalization_schemes",
    "use_mask_for_norm",
    "architecture",
)


@dataclass
class ConfigurationPlan:
    """One configuration of the plans (``configurations[name]``), spacing and sizes in transposed order.

    Every field may be None in a configuration that ``inherits_from`` another (such as
    ``3d_cascade_fullres``); ``Plans.configuration(name)`` returns it resolved.
    """

    inherits_from: str | None = None  # the configuration this one overrides
    data_identifier: str | None = None  # preprocessed data folder name
    preprocessor_name: str | None = None
    batch_size: int | None = None
    patch_size: list[int] | None = None  # (Z, Y, X) or (Y, X)
    median_image_size_in_voxels: list[float] | None = None
    spacing: list[float] | None = None  # target spacing, mm
    normalization_schemes: list[str] | None = None  # per channel
    use_mask_for_norm: list[bool] | None = None  # per channel
    resampling_fn_data: str | None = None
    resampling_fn_seg: str | None = None
    resampling_fn_data_kwargs: dict | None = None
    resampling_fn_seg_kwargs: dict | None = None
    resampling_fn_probabilities: str | None = None
    resampling_fn_probabilities_kwargs: dict | None = None
    architecture: ArchitecturePlan | None = None
    batch_dice: bool | None = None  # Dice over the whole batch rather than per sample
    previous_stage: str | None = None  # cascade: the configuration whose predictions are an input
    next_stage: str | list[str] | None = None  # cascade: the configuration(s) refining this one's output
    extra: dict = field(default_factory=dict)  # unknown keys, kept

    @property
    def next_stage_names(self) -> list[str]:
        if self.next_stage is None:
            return []
        return [self.next_stage] if isinstance(self.next_stage, str) else list(self.next_stage)

    @property
    def dimension(self) -> int:
        return len(self.patch_size)

    @classmethod
    def from_json(cls, data: dict) -> ConfigurationPlan:
        known, extra = _take(copy.deepcopy(data), _CONFIGURATION_KEYS)
        if known.get("architecture") is not None:
            known["architecture"] = ArchitecturePlan.from_json(known["architecture"])
        return cls(**known, extra=extra)

    def to_json(self) -> dict:
        out = {}
        for key in _CONFIGURATION_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_json() if isinstance(value, ArchitecturePlan) else copy.deepcopy(value)
        return {**out, **copy.deepcopy(self.extra)}


_PLANS_KEYS = (
    "dataset_name",
    "plans_name",
    "original_median_spacing_after_transp",
    "original_median_shape_after_transp",
    "image_reader_writer",
    "transpose_forward",
    "transpose_backward",
    "configurations",
    "experiment_planner_used",
    "label_manager",
    "foreground_intensity_properties_per_channel",
)
_REQUIRED_PLANS_KEYS = ("plans_name", "transpose_forward", "transpose_backward", "configurations")


@dataclass
class Plans:
    """nnU-Net's ``nnUNetPlans.json`` as a dataclass: ``Plans.from_json(d).to_json() == d``."""

    dataset_name: str
    plans_name: str
    original_median_spacing_after_transp: list[float]
    original_median_shape_after_transp: list[int]
    image_reader_writer: str  # nnU-Net reader class name, e.g. "SimpleITKIO"
    transpose_forward: list[int]  # reader axis order -> planning order (coarsest axis first)
    transpose_backward: list[int]  # and back
    configurations: dict[str, ConfigurationPlan]  # as stored: inherits_from unresolved
    experiment_planner_used: str
    label_manager: str
    foreground_intensity_properties_per_channel: dict  # the fingerprint's, per channel "0", "1", ...
    extra: dict = field(default_factory=dict)  # unknown keys, kept

    @property
    def configuration_names(self) -> list[str]:
        return list(self.configurations)

    def inheritance_chain(self, name: str) -> list[str]:
        """``[name, its parent, ...]`` along ``inherits_from``; a cycle or a missing parent is an error."""
        chain = []
        while name is not None:
            if name not in self.configurations:
                inherited = f" (inherits_from of {chain[-1]!r})" if chain else ""
                raise ValueError(
                    f"configuration {name!r}{inherited} is not in the plans; "
                    f"available: {', '.join(self.configurations) or 'none'}"
                )
            if name in chain:
                raise ValueError(f"inherits_from forms a cycle: {' -> '.join(chain + [name])}")
            chain.append(name)
            name = self.configurations[name].inherits_from
        return chain

    def configuration(self, name: str) -> ConfigurationPlan:
        """A configuration with ``inherits_from`` resolved: the parent's keys, overridden by the child's."""
        merged: dict[str, Any] = {}
        for ancestor in reversed(self.inheritance_chain(name)):
            merged.update(self.configurations[ancestor].to_json())
        missing = [key for key in _REQUIRED_CONFIGURATION_KEYS if key not in merged]
        if missing:
            raise ValueError(f"configuration {name!r} has no {', '.join(missing)} (not even inherited)")
        return ConfigurationPlan.from_json(merged)

    @classmethod
    def from_json(cls, data: dict) -> Plans:
        missing = [key for key in _REQUIRED_PLANS_KEYS if key not in data]
        if missing:
            raise ValueError(f"not nnU-Net plans: no {', '.join(missing)}")
        known, extra = _take(copy.deepcopy(data), _PLANS_KEYS)
        known["configurations"] = {
            name: ConfigurationPlan.from_json(c) for name, c in known["configurations"].items()
        }
        values = {key: known.get(key) for key in _PLANS_KEYS}
        return cls(**values, extra=extra)

    def to_json(self) -> dict:
        out = {}
        for key in _PLANS_KEYS:
            value = getattr(self, key)
            if key == "configurations":
                value = {name: c.to_json() for name, c in value.items()}
            if value is not None:
                out[key] = copy.deepcopy(value)
        return {**out, **copy.deepcopy(self.extra)}


def keep_custom_configurations(new: Plans, old: Plans) -> Plans:
    """``new`` plus the configurations only ``old`` has, as nnU-Net keeps hand-added ones when it replans."""
    merged = copy.deepcopy(new)
    for name, configuration in old.configurations.items():
        merged.configurations.setdefault(name, copy.deepcopy(configuration))
    return merged


def load_plans(path: str | os.PathLike) -> Plans:
    """Read a plans JSON (nnU-Net's or ours)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no plans file; plan the dataset first")
    try:
        return Plans.from_json(load_json(path))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def save_plans(plans: Plans, path: str | os.PathLike) -> None:
    """Write the plans as nnU-Net does (key order kept, indent 4), atomically."""
    atomic_write_json(path, plans.to_json(), sort_keys=False, indent=4)


def as_plans(plans: Plans | dict | str | os.PathLike) -> Plans:
    """The plans as :class:`Plans`: given as such, as nnU-Net's plans dict, or as a JSON path."""
    if isinstance(plans, Plans):
        return plans
    if isinstance(plans, dict):
        return Plans.from_json(plans)
    if isinstance(plans, (str, os.PathLike)):
        return load_plans(plans)
    raise TypeError(
        f"plans must be Plans, a plans dict or a path to a plans JSON, not {type(plans).__name__}"
    )
