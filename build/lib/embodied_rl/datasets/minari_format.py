"""Write datasets in Minari's on-disk format with h5py (no minari, no jax needed).

Layout under a root directory (``$MINARI_DATASETS_PATH`` by default, as in minari)::

    <root>/<namespace>/namespace_metadata.json
    <root>/<namespace>/<name>-v<N>/data/metadata.json
    <root>/<namespace>/<name>-v<N>/data/main_data.hdf5   # groups episode_0, episode_1, ...

Each episode group holds ``observations`` (a group per Dict key; Text keys as UTF-8
strings, as minari stores them), ``actions``, ``rewards`` (float64), ``terminations``,
``truncations``, ``infos``, and attributes (``id``, ``seed``, ``total_steps`` and our
per-episode metadata; nested dicts flattened as ``domain/<param>`` like minari's options).
Images are raw uint8 arrays in chunked, compressed HDF5 datasets (``jpeg_encoding: false``
tells minari to read them as arrays). Everything is written to a hidden temporary
directory beside the target and renamed into place, so a dataset is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from gymnasium import spaces

from embodied_rl.datasets.episode import Episode, check_episode
from embodied_rl.datasets.spaces_json import serialize_space
from embodied_rl.utils.io import write_text_atomic

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # version of our additions (metadata["embodied_rl"]); bump on changes
MINARI_VERSION = "0.5.4"  # the minari on-disk format we write
DATA_DIR, METADATA_FILE, MAIN_FILE = "data", "metadata.json", "main_data.hdf5"
NAMESPACE_FILE = "namespace_metadata.json"
CODECS: tuple[str, ...] = ("gzip", "lzf", "none")
_ID_RE = re.compile(
    r"^(?:(?P<namespace>[-_\w][-_\w/]*[-_\w]+)/)?(?P<name>[-_\w]+?)-v(?P<version>\d+)$"
)
_CHUNK_BYTES = 256 * 1024  # target size of an image chunk


def default_root() -> Path:
    """``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``: where minari looks for datasets."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def parse_dataset_id(dataset_id: str) -> tuple[str | None, str, int]:
    """Split ``namespace/name-vN`` into ``(namespace, name, N)`` (the namespace may be absent)."""
    match = _ID_RE.fullmatch(dataset_id)
    if match is None:
        raise ValueError(
            f"dataset_id={dataset_id!r} is malformed; use 'namespace/name-vN', "
            "e.g. 'embodied_rl/pick-expert-v0'"
        )
    return match["namespace"], match["name"], int(match["version"])


def dataset_dir(root: str | os.PathLike | None, dataset_id: str) -> Path:
    """The directory of ``dataset_id`` under ``root`` (it holds ``data/``)."""
    parse_dataset_id(dataset_id)
    return (Path(root) if root is not None else default_root()) / dataset_id


@dataclass(frozen=True)
class ImageCodec:
    """How uint8 image observations are compressed (lossless HDF5 filters)."""

    name: str = "gzip"  # "gzip" (deflate, portable) | "lzf" (faster, h5py-only) | "none"
    level: int = 4  # gzip level 1-9

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ValueError(f"image codec={self.name!r} is not supported; choose one of {CODECS}")
        if not 1 <= self.level <= 9:
            raise ValueError(f"gzip level={self.level} must lie in [1, 9]")

    def dataset_kwargs(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """``create_dataset`` keyword arguments for uint8 frames stacked as ``shape``."""
        if self.name == "none":
            return {}
        frame_shape = shape[1:]
        frames = max(1, min(shape[0], _CHUNK_BYTES // max(1, int(np.prod(frame_shape)))))
        kwargs: dict[str, Any] = {"chunks": (frames, *frame_shape), "compression": self.name}
        if self.name == "gzip":
            kwargs["compression_opts"] = self.level
        return kwargs

    def to_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"codec": self.name, "lossless": True, "container": "hdf5-filter"}
        if self.name == "gzip":
            meta["level"] = self.level
        return meta


def _is_image(array: np.ndarray) -> bool:
    return array.dtype == np.uint8 and array.ndim >= 3


def _write_array(group: h5py.Group, key: str, data: Any, codec: ImageCodec) -> None:
    if isinstance(data, list | tuple) and (not data or isinstance(data[0], str)):
        group.create_dataset(key, data=list(data), dtype=h5py.string_dtype("utf-8"))
        return
    array = np.asarray(data)
    kwargs = codec.dataset_kwargs(array.shape) if _is_image(array) and len(array) else {}
    group.create_dataset(key, data=array, **kwargs)


def flatten_attrs(metadata: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``a/b`` keys (minari unflattens them in ``get_episode_metadata``)."""
    flat: dict[str, Any] = {}
    for key, value in metadata.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_attrs(value, prefix=f"{name}/"))
        elif value is not None:
            flat[name] = value
    return flat


def write_episode_group(
    group: h5py.Group, episode: Episode, codec: ImageCodec, episode_id: int
) -> None:
    """Write ``episode`` into an empty HDF5 group in Minari's per-episode layout."""
    group.attrs["id"] = episode_id
    group.attrs["total_steps"] = len(episode)
    for key, value in flatten_attrs(episode.metadata).items():
        group.attrs[key] = value
    if isinstance(episode.observations, Mapping):
        obs = group.create_group("observations")
        for key, value in episode.observations.items():
            _write_array(obs, key, value, codec)
    else:
        _write_array(group, "observations", episode.observations, codec)
    _write_array(group, "actions", episode.actions, codec)
    group.create_dataset("rewards", data=np.asarray(episode.rewards, dtype=np.float64))
    group.create_dataset("terminations", data=np.asarray(episode.terminations, dtype=bool))
    group.create_dataset("truncations", data=np.asarray(episode.truncations, dtype=bool))
    infos = group.create_group("infos")
    for key, value in episode.infos.items():
        _write_array(infos, key, value, codec)


def file_checksum(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _ensure_namespaces(root: Path, dataset_id: str) -> None:
    namespace = parse_dataset_id(dataset_id)[0]
    parts = namespace.split("/") if namespace else []
    for depth in range(1, len(parts) + 1):
        path = root.joinpath(*parts[:depth], NAMESPACE_FILE)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, "{}")


class DatasetWriter:
    """Append episodes to a new dataset; :meth:`finish` makes it appear atomically.

    Use as a context manager: leaving the block with an exception removes the
    temporary directory and leaves any existing dataset untouched.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        dataset_id: str,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        *,
        codec: ImageCodec | None = None,
        overwrite: bool = False,
    ) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.dataset_id = dataset_id
        self.target = dataset_dir(self.root, dataset_id)
        if self.target.exists() and not overwrite:
            raise FileExistsError(
                f"dataset {dataset_id!r} already exists at {self.target}; pass overwrite=True "
                "(--overwrite) or bump the version in the id"
            )
        self.observation_space, self.action_space = observation_space, action_space
        self.codec = codec or ImageCodec()
        self.tmp_dir = self.target.parent / f".{self.target.name}.tmp-{uuid.uuid4().hex[:8]}"
        (self.tmp_dir / DATA_DIR).mkdir(parents=True)
        self._file = h5py.File(self.tmp_dir / DATA_DIR / MAIN_FILE, "w", track_order=True)
        self.n_episodes = 0
        self.n_steps = 0

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, episode: Episode) -> None:
        """Validate and append one episode."""
        name = f"episode_{self.n_episodes}"
        check_episode(name, episode.as_mapping(), self.observation_space, self.action_space)
        write_episode_group(self._file.create_group(name), episode, self.codec, self.n_episodes)
        self.n_episodes += 1
        self.n_steps += len(episode)

    def add_group(self, source: h5py.Group) -> None:
        """Append an episode group written by :func:`write_episode_group` (copied as is)."""
        name = f"episode_{self.n_episodes}"
        self._file.copy(source, self._file, name=name)
        self._file[name].attrs["id"] = self.n_episodes
        self.n_episodes += 1
        self.n_steps += int(source.attrs["total_steps"])

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._file.id.valid:
            self._file.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def finish(
        self, metadata: Mapping[str, Any] | None = None, env_spec: str | None = None
    ) -> Path:
        """Close the file, write ``metadata.json`` (checksum included) and move into place.

        ``metadata`` keys go to the top level (minari's: ``ref_min_score``, ``description``,
        ...) except ``embodied_rl``, which is merged into our section.
        """
        if self.n_episodes == 0:
            self.abort()
            raise ValueError(f"dataset {self.dataset_id!r} has no episodes; nothing was written")
        self._file.close()
        data_dir = self.tmp_dir / DATA_DIR
        extra = dict(metadata or {})
        ours = {
            "format_version": FORMAT_VERSION,
            "checksum": file_checksum(data_dir / MAIN_FILE),
            "image_codec": self.codec.to_metadata(),
            **extra.pop("embodied_rl", {}),
        }
        meta: dict[str, Any] = {
            "dataset_id": self.dataset_id,
            "minari_version": MINARI_VERSION,
            "data_format": "hdf5",
            "jpeg_encoding": False,
            "total_episodes": self.n_episodes,
            "total_steps": self.n_steps,
            "observation_space": serialize_space(self.observation_space),
            "action_space": serialize_space(self.action_space),
            "dataset_size": round((data_dir / MAIN_FILE).stat().st_size / 1e6, 1),
            **({"env_spec": env_spec} if env_spec else {}),
            **extra,
            "embodied_rl": ours,
        }
        (data_dir / METADATA_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
        self._move_into_place()
        _ensure_namespaces(self.root, self.dataset_id)
        logger.info("wrote %s: %d episodes, %d steps", self.target, self.n_episodes, self.n_steps)
        return self.target

    def _move_into_place(self) -> None:
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.target, old)
        os.replace(self.tmp_dir, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON")


def write_dataset(
    root: str | os.PathLike | None,
    dataset_id: str,
    episodes: Iterable[Episode],
    observation_space: spaces.Space,
    action_space: spaces.Space,
    *,
    metadata: Mapping[str, Any] | None = None,
    codec: ImageCodec | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``episodes`` as the Minari dataset ``dataset_id`` under ``root``; return its path."""
    with DatasetWriter(
        root, dataset_id, observation_space, action_space, codec=codec, overwrite=overwrite
    ) as writer:
        for episode in episodes:
            writer.add(episode)
        return writer.finish(metadata)


def save_dataset(data: Any, root: str | os.PathLike | None, dataset_id: str, **kwargs: Any) -> Path:
    """Write an in-memory :class:`~embodied_rl.datasets.offline.OfflineDataset` to disk."""
    meta = {k: v for k, v in data.metadata.items() if k in ("ref_min_score", "ref_max_score")}
    meta.update(kwargs.pop("metadata", {}))
    return write_dataset(
        root,
        dataset_id,
        data.episodes(),
        data.observation_space,
        data.action_space,
        metadata=meta,
        **kwargs,
    )
