"""Demonstration datasets: collection, the Minari on-disk format, D4RL files and samplers.

``collect(env_id, tier_or_policy, ...)`` writes a Minari dataset that ``minari.load_dataset``
reads; ``load_dataset`` validates and loads one into flat arrays; the samplers turn those
into torch batches of transitions, frame histories or trajectory segments. The samplers
load lazily, so collection workers never import torch.
"""

import importlib
from typing import Any

from embodied_rl.datasets.collect import (
    CollectConfig,
    CollectionError,
    CollectResult,
    collect,
    default_dataset_id,
)
from embodied_rl.datasets.d4rl_format import export_d4rl, import_d4rl
from embodied_rl.datasets.episode import DatasetChecksumError, DatasetSchemaError, Episode
from embodied_rl.datasets.minari_format import (
    FORMAT_VERSION,
    DatasetWriter,
    ImageCodec,
    dataset_dir,
    save_dataset,
    write_dataset,
)
from embodied_rl.datasets.minari_reader import (
    DatasetSummary,
    list_datasets,
    load_dataset,
    validate_dataset,
)
from embodied_rl.datasets.offline import OfflineDataset, concatenate
from embodied_rl.datasets.tiers import MEDIUM_NOISE, TIERS, normalized_score

__all__ = [
    "FORMAT_VERSION",
    "MEDIUM_NOISE",
    "TIERS",
    "CollectConfig",
    "CollectResult",
    "CollectionError",
    "DatasetChecksumError",
    "DatasetSchemaError",
    "DatasetSummary",
    "DatasetWriter",
    "Episode",
    "HistorySampler",
    "ImageCodec",
    "OfflineDataset",
    "SamplerConfig",
    "SegmentSampler",
    "TransitionSampler",
    "collect",
    "concatenate",
    "dataset_dir",
    "default_dataset_id",
    "export_d4rl",
    "import_d4rl",
    "list_datasets",
    "load_dataset",
    "normalized_score",
    "save_dataset",
    "validate_dataset",
    "write_dataset",
]

_LAZY = {
    "HistorySampler": "samplers",
    "SamplerConfig": "samplers",
    "SegmentSampler": "samplers",
    "TransitionSampler": "samplers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
