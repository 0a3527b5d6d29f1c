"""D4RL HDF5 import/export: exact round trips both ways, files without next_observations."""

from __future__ import annotations

import logging

import h5py
import minari
import numpy as np
import pytest

from embodied_rl.datasets import (
    DatasetSchemaError,
    OfflineDataset,
    export_d4rl,
    import_d4rl,
    load_dataset,
    save_dataset,
)


@pytest.fixture
def data(episodes, dataset_spaces) -> OfflineDataset:
    return OfflineDataset.from_episodes(episodes, *dataset_spaces)


def _d4rl_file(path, with_next: bool = True) -> dict[str, np.ndarray]:
    """A D4RL-style file: 3 episodes (terminal, timeout, terminal) of lengths 4, 3, 5."""
    rng = np.random.default_rng(0)
    n = 12
    arrays = {
        "observations": rng.normal(size=(n, 5)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.isin(np.arange(n), [3, 11]),
        "timeouts": np.isin(np.arange(n), [6]),
        "infos/goal": rng.normal(size=(n, 2)),
    }
    if with_next:  # the next row within an episode, a fresh final observation at its end
        following = np.roll(arrays["observations"], -1, axis=0)
        ends = arrays["terminals"] | arrays["timeouts"]
        final = rng.normal(size=(n, 5)).astype(np.float32)
        arrays["next_observations"] = np.where(ends[:, None], final, following)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
    return arrays


def test_export_import_round_trip_is_exact(tmp_path, data):
    path = export_d4rl(data, tmp_path / "synthetic.hdf5")
    with h5py.File(path) as f:
        assert {
            "observations",
            "next_observations",
            "actions",
            "rewards",
            "terminals",
            "timeouts",
        } <= set(f)
        assert f["rewards"].dtype == np.float32 and f["observations"].shape == (12, 3)
    back = import_d4rl(path)
    np.testing.assert_array_equal(back.episode_starts, data.episode_starts)
    np.testing.assert_array_equal(back.observations["observation"], data.observations["state"])
    for name in ("actions", "rewards", "terminations", "truncations"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    reset_rows = data.episode_starts[:-1] + np.arange(data.n_episodes)
    after_step = np.setdiff1d(np.arange(len(data.infos["success"])), reset_rows)
    np.testing.assert_array_equal(
        back.infos["success"][after_step], data.infos["success"][after_step]
    )


def test_d4rl_file_import_export_is_exact(tmp_path):
    original = _d4rl_file(tmp_path / "native.hdf5")
    data = import_d4rl(tmp_path / "native.hdf5")
    assert data.episode_lengths.tolist() == [4, 3, 5]
    assert data.truncations.sum() == 1 and data.terminations.sum() == 2
    export_d4rl(data, tmp_path / "again.hdf5")
    with h5py.File(tmp_path / "again.hdf5") as f:
        for key, value in original.items():
            np.testing.assert_array_equal(f[key][()], value, err_msg=key)


def test_import_without_next_observations_drops_last_steps(tmp_path, caplog):
    original = _d4rl_file(tmp_path / "no_next.hdf5", with_next=False)
    with caplog.at_level(logging.WARNING):
        data = import_d4rl(tmp_path / "no_next.hdf5")
    assert "no next_observations" in caplog.text
    assert data.episode_lengths.tolist() == [3, 2, 4]
    np.testing.assert_array_equal(data.episode(0).observations, original["observations"][0:4])
    assert data.truncations[data.episode_starts[1:] - 1].all()  # the cut ends are truncations


def test_import_reports_missing_keys(tmp_path):
    with h5py.File(tmp_path / "bad.hdf5", "w") as f:
        f["observations"] = np.zeros((3, 2))
    with pytest.raises(DatasetSchemaError, match=r"missing D4RL keys \['actions', 'rewards'"):
        import_d4rl(tmp_path / "bad.hdf5")


def test_imported_d4rl_saves_as_minari(tmp_path, monkeypatch):
    _d4rl_file(tmp_path / "native.hdf5")
    data = import_d4rl(tmp_path / "native.hdf5")
    save_dataset(data, tmp_path / "root", "d4rl/native-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    theirs = minari.load_dataset("d4rl/native-v0")
    assert [len(e) for e in theirs.iterate_episodes()] == [4, 3, 5]
    ours = load_dataset("d4rl/native-v0", tmp_path / "root")
    np.testing.assert_array_equal(
        ours.observations["observation"], data.observations["observation"]
    )


def test_import_warns_about_inconsistent_next_observations(tmp_path, caplog):
    arrays = _d4rl_file(tmp_path / "native.hdf5")
    with h5py.File(tmp_path / "native.hdf5", "a") as f:
        f["next_observations"][1] = arrays["next_observations"][1] + 1.0  # inside episode 0
    with caplog.at_level(logging.WARNING):
        import_d4rl(tmp_path / "native.hdf5")
    assert "differ from the following observations at 1 rows" in caplog.text
