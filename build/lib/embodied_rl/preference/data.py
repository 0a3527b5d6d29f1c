"""Segments, preference pairs and the preference file.

A :class:`Segments` is a set of length-``L`` windows into an
:class:`~embodied_rl.datasets.OfflineDataset` (any dataset: collected with
:func:`~embodied_rl.datasets.collect`, loaded with :func:`~embodied_rl.datasets.load_dataset`,
or built from rollouts with ``OfflineDataset.from_episodes``); windows never cross an episode
end. A :class:`PreferenceDataset` pairs segments with labels (1: the first is preferred, 0:
the second, 0.5: equal). :class:`PreferenceSampler` draws batches of labelled pairs as
tensors. Labels from people or judges live in a JSON-lines preference file, one record per
line, appended atomically (:func:`append_preference`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embodied_rl.datasets import OfflineDataset
from embodied_rl.datasets.samplers import SamplerConfig, SegmentSampler
from embodied_rl.utils.io import write_text_atomic

DEFAULT_SEGMENT_LENGTH = 64  # CPL (Hejna et al. 2023) and B-Pref's segment length
PREFER_FIRST, PREFER_SECOND, EQUAL = 1.0, 0.0, 0.5
LABEL_VALUES = {"a": PREFER_FIRST, "b": PREFER_SECOND, "equal": EQUAL}  # "skip" has none
CHOICES = (*LABEL_VALUES, "skip")


# ---------------------------------------------------------------------- segments
def valid_starts(data: OfflineDataset, length: int) -> np.ndarray:
    """Transition indices where a window of ``length`` steps fits inside its episode."""
    if length < 1:
        raise ValueError(f"length={length} must be >= 1")
    ends = data.episode_starts[data.episode_index + 1]
    starts = np.flatnonzero(np.arange(data.n_transitions) + length <= ends)
    if len(starts) == 0:
        raise ValueError(
            f"length={length} exceeds every episode (longest: {int(data.episode_lengths.max())} "
            "steps); lower the segment length or collect with terminate_on_success=False"
        )
    return starts


@dataclass
class Segments:
    """Length-``length`` windows of ``data`` starting at transition indices ``starts``."""

    data: OfflineDataset
    starts: np.ndarray  # (S,) int64 transition index of each window's first step
    length: int = DEFAULT_SEGMENT_LENGTH

    def __post_init__(self) -> None:
        self.starts = np.asarray(self.starts, dtype=np.int64)
        ok = np.isin(self.starts, valid_starts(self.data, self.length))
        if not ok.all():
            bad = self.starts[~ok][:5].tolist()
            raise ValueError(
                f"segment starts {bad} do not leave {self.length} steps before their episode ends"
            )

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def transitions(self) -> np.ndarray:
        """``(S, L)`` transition indices of every step of every segment."""
        return self.starts[:, None] + np.arange(self.length)

    def rewards(self) -> np.ndarray:
        """``(S, L)`` ground-truth rewards (what the scripted teacher reads)."""
        return self.data.rewards[self.transitions].astype(np.float64)

    def returns(self) -> np.ndarray:
        """``(S,)`` undiscounted segment returns."""
        return self.rewards().sum(axis=1)

    @property
    def episodes(self) -> np.ndarray:
        """``(S,)`` episode of each segment."""
        return self.data.episode_index[self.starts]

    @property
    def steps(self) -> np.ndarray:
        """``(S,)`` step within its episode where each segment starts."""
        return self.data.step_in_episode[self.starts]

    def observations(self, key: str) -> np.ndarray:
        """``(S, L, ...)`` observation ``key`` at every step (the state each action saw)."""
        rows = self.data.obs_index[self.starts][:, None] + np.arange(self.length)
        return self.data.observations[key][rows]

    def actions(self) -> np.ndarray:
        """``(S, L, A)`` actions."""
        return self.data.actions[self.transitions]

    def reference(self, index: int) -> dict[str, int]:
        """Where segment ``index`` lies, as stored in a preference file."""
        return {
            "episode": int(self.episodes[index]),
            "start": int(self.steps[index]),
            "length": self.length,
        }


def sample_segments(
    data: OfflineDataset, n_segments: int, length: int = DEFAULT_SEGMENT_LENGTH, seed: int = 0
) -> Segments:
    """``n_segments`` distinct windows drawn uniformly from every valid start (seeded)."""
    starts = valid_starts(data, length)
    if not 1 <= n_segments <= len(starts):
        raise ValueError(
            f"n_segments={n_segments} must lie in [1, {len(starts)}] (the windows of "
            f"length {length} this dataset holds)"
        )
    rng = np.random.default_rng(seed)
    return Segments(data, np.sort(rng.choice(starts, n_segments, replace=False)), length)


def segment_at(data: OfflineDataset, episode: int, start: int, length: int) -> int:
    """The transition index of step ``start`` of ``episode`` (checked to fit ``length``)."""
    if not 0 <= episode < data.n_episodes:
        raise ValueError(f"episode {episode} out of range; the dataset has {data.n_episodes}")
    if not 0 <= start <= data.episode_lengths[episode] - length:
        raise ValueError(
            f"a segment of {length} steps at step {start} does not fit episode {episode} "
            f"({int(data.episode_lengths[episode])} steps)"
        )
    return int(data.episode_starts[episode]) + start


# ---------------------------------------------------------------------- pairs
def random_pairs(n_segments: int, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` random pairs ``(i, j)``, ``i != j``, of segment indices (sparse comparisons)."""
    if n_segments < 2:
        raise ValueError(f"n_segments={n_segments}: pairs need at least 2 segments")
    if n_pairs < 1:
        raise ValueError(f"n_pairs={n_pairs} must be >= 1")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n_segments, n_pairs)
    second = (first + rng.integers(1, n_segments, n_pairs)) % n_segments  # never equal to first
    return first, second


def all_pairs(n_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair ``i < j`` (CPL's dense comparisons)."""
    first, second = np.triu_indices(n_segments, k=1)
    return first.astype(np.int64), second.astype(np.int64)


@dataclass
class PreferenceDataset:
    """Labelled pairs of segments: ``labels[p]`` is 1 when ``first[p]`` is preferred, 0 when
    ``second[p]`` is, 0.5 for equal; NaN marks a skipped query (dropped by :meth:`labelled`)."""

    segments: Segments
    first: np.ndarray  # (P,) segment indices
    second: np.ndarray  # (P,)
    labels: np.ndarray  # (P,) float32

    def __post_init__(self) -> None:
        self.first = np.asarray(self.first, dtype=np.int64)
        self.second = np.asarray(self.second, dtype=np.int64)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if not len(self.first) == len(self.second) == len(self.labels):
            raise ValueError(
                f"first, second and labels have {len(self.first)}, {len(self.second)} and "
                f"{len(self.labels)} entries; they must match"
            )
        for name in ("first", "second"):
            index = getattr(self, name)
            if len(index) and (index.min() < 0 or index.max() >= len(self.segments)):
                raise ValueError(f"{name} indexes segments outside [0, {len(self.segments)})")
        known = np.isnan(self.labels) | np.isin(self.labels, list(LABEL_VALUES.values()))
        if not known.all():
            raise ValueError(
                f"labels {np.unique(self.labels[~known])[:5].tolist()} are not 1 (first), "
                "0 (second), 0.5 (equal) or NaN (skipped)"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def labelled(self) -> PreferenceDataset:
        """The pairs that were not skipped."""
        keep = ~np.isnan(self.labels)
        return PreferenceDataset(
            self.segments, self.first[keep], self.second[keep], self.labels[keep]
        )

    def summary(self) -> dict[str, float]:
        """Counts of each label."""
        labels = self.labels
        return {
            "pairs": float(len(labels)),
            "first": float(np.sum(labels == PREFER_FIRST)),
            "second": float(np.sum(labels == PREFER_SECOND)),
            "equal": float(np.sum(labels == EQUAL)),
            "skipped": float(np.sum(np.isnan(labels))),
        }


# ---------------------------------------------------------------------- batches
class PreferenceSampler(SegmentSampler):
    """Batches of labelled pairs: both segments' observations and actions, and the label.

    Shares the dataset samplers' seeded generator (so the shared training loop checkpoints
    its state) and their observation-key selection.
    """

    def __init__(self, prefs: PreferenceDataset, config: SamplerConfig | None = None) -> None:
        prefs = prefs.labelled()
        if len(prefs) == 0:
            raise ValueError("the preference dataset has no labelled pairs (all skipped?)")
        super().__init__(prefs.segments.data, prefs.segments.length, config or SamplerConfig(32))
        self.prefs = prefs
        self.pair_starts = np.stack(
            [prefs.segments.starts[prefs.first], prefs.segments.starts[prefs.second]]
        )  # (2, P)

    def _window(self, start: np.ndarray) -> tuple[Any, torch.Tensor]:
        rows = self.data.obs_index.take(start)[:, None] + self.window  # (B, L)
        transition = (start[:, None] + self.window).ravel()  # (B * L,)
        actions = self.actions.take(transition, axis=0).reshape(*rows.shape, -1)  # (B, L, A)
        return self._gather_obs(rows), torch.from_numpy(actions)

    def sample(self) -> dict[str, Any]:
        """``obs_a``/``obs_b``: ``{key: (B, L, ...)}``, ``action_a``/``action_b`` ``(B, L, A)``,
        ``label`` ``(B,)`` float32 (1: a preferred)."""
        i = self._indices(len(self.prefs))
        obs_a, action_a = self._window(self.pair_starts[0].take(i))
        obs_b, action_b = self._window(self.pair_starts[1].take(i))
        return {
            "obs_a": obs_a,
            "action_a": action_a,
            "obs_b": obs_b,
            "action_b": action_b,
            "label": torch.from_numpy(self.prefs.labels.take(i)),
        }


# ---------------------------------------------------------------------- preference files
def append_preference(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON record to a JSON-lines preference file atomically: the file is
    rewritten beside itself and renamed, so a crash or Ctrl-C leaves either the old file or
    the new one, never a half-written line."""
    path = Path(path)
    if record.get("choice") not in CHOICES:
        raise ValueError(f"choice={record.get('choice')!r}; choose one of {CHOICES}")
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text_atomic(path, old + json.dumps(record, sort_keys=True) + "\n")


def read_preferences(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a preference file (``ValueError`` naming the first bad line)."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON: {error}") from None
        if record.get("choice") not in CHOICES:
            raise ValueError(
                f"{path}:{number} has choice={record.get('choice')!r}; not in {CHOICES}"
            )
        records.append(record)
    return records


def preferences_from_records(
    data: OfflineDataset, records: Iterable[dict[str, Any]]
) -> PreferenceDataset:
    """Pairs of a preference file as a dataset over ``data``. Each record holds ``a`` and
    ``b`` (``{"episode", "start", "length"}``) and ``choice`` (``a``/``b``/``equal``/``skip``);
    a later record for the same pair replaces an earlier one (a relabel)."""
    latest: dict[tuple, dict[str, Any]] = {}
    for record in records:
        key = tuple(tuple(sorted(record[side].items())) for side in ("a", "b"))
        latest[key] = record
    if not latest:
        raise ValueError("no preference records")
    lengths = {int(r[side]["length"]) for r in latest.values() for side in ("a", "b")}
    if len(lengths) != 1:
        raise ValueError(f"segments of one preference dataset need one length; found {lengths}")
    length = lengths.pop()
    starts: dict[int, int] = {}
    pairs, labels = [], []
    for record in latest.values():
        index = []
        for side in ("a", "b"):
            ref = record[side]
            start = segment_at(data, int(ref["episode"]), int(ref["start"]), length)
            index.append(starts.setdefault(start, len(starts)))
        pairs.append(index)
        labels.append(LABEL_VALUES.get(record["choice"], np.nan))
    segments = Segments(data, np.array(list(starts), dtype=np.int64), length)
    first, second = np.array(pairs, dtype=np.int64).T
    return PreferenceDataset(segments, first, second, np.array(labels, dtype=np.float32))


def records_from_preferences(
    prefs: PreferenceDataset, labeler: str, extra: Sequence[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Preference-file records of ``prefs`` (``extra[p]`` merged into record ``p``)."""
    names = {PREFER_FIRST: "a", PREFER_SECOND: "b", EQUAL: "equal"}
    out = []
    for p in range(len(prefs)):
        label = float(prefs.labels[p])
        record = {
            "a": prefs.segments.reference(int(prefs.first[p])),
            "b": prefs.segments.reference(int(prefs.second[p])),
            "choice": "skip" if np.isnan(label) else names[label],
            "labeler": labeler,
        }
        out.append({**record, **(extra[p] if extra else {})})
    return out
