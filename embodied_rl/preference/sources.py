"""Where a run's preferences come from, named by one string (``erl train --preferences``).

- a labeling session directory (``erl label --out DIR``): the person's labels over the
  session's own rollout dataset;
- a JSON-lines preference file (``preferences.jsonl`` records, ``a``/``b``/``choice``) over the
  dataset the caller gives;
- ``scripted`` or ``scripted:pairs=2000,segments=500,length=64``: random segment pairs of that
  dataset labelled by the B-Pref scripted teacher (the dataset's rewards, perfectly rational).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embodied_rl.datasets import OfflineDataset
from embodied_rl.preference.data import (
    DEFAULT_SEGMENT_LENGTH,
    PreferenceDataset,
    preferences_from_records,
    random_pairs,
    read_preferences,
    sample_segments,
)

SCRIPTED_DEFAULTS = {"pairs": 2000, "segments": 500, "length": DEFAULT_SEGMENT_LENGTH}


def is_session(spec: str | os.PathLike) -> bool:
    """A labeling session directory (it holds ``session.json``)."""
    from embodied_rl.preference.human import SESSION_FILE

    return Path(spec).is_dir() and (Path(spec) / SESSION_FILE).is_file()


def _scripted_options(spec: str) -> dict[str, int]:
    _, _, text = spec.partition(":")
    options = dict(SCRIPTED_DEFAULTS)
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise ValueError(
                f"preferences {spec!r}: {item!r} is not KEY=VALUE with KEY one of {sorted(options)}"
            )
        try:
            options[key] = int(value)
        except ValueError:
            raise ValueError(f"preferences {spec!r}: {key}={value!r} is not an integer") from None
    return options


def load_preferences(
    spec: str | os.PathLike, data: OfflineDataset | None = None, seed: int = 0
) -> PreferenceDataset:
    """The preference dataset ``spec`` names (see the module docstring); ``data`` is the
    dataset a preference file or the scripted teacher refers to (a session brings its own)."""
    text = str(spec)
    if text == "scripted" or text.startswith("scripted:"):
        from embodied_rl.preference.labelers import ScriptedTeacher

        if data is None:
            raise ValueError("preferences 'scripted' label segments of a dataset: pass one")
        options: dict[str, Any] = _scripted_options(text)
        segments = sample_segments(data, options["segments"], options["length"], seed=seed)
        first, second = random_pairs(len(segments), options["pairs"], seed=seed)
        return ScriptedTeacher().label_pairs(segments, first, second)
    if is_session(text):
        from embodied_rl.preference.human import load_session_preferences

        return load_session_preferences(text)
    path = Path(text)
    if path.is_file():
        if data is None:
            raise ValueError(f"preference file {path} refers to a dataset: pass it as well")
        return preferences_from_records(data, read_preferences(path))
    raise FileNotFoundError(
        f"preferences {text!r}: not a labeling session directory (with session.json), a "
        "preferences.jsonl file, or 'scripted[:pairs=N,segments=N,length=N]'"
    )
