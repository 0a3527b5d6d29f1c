"""Our Minari writer and reader: minari reads what we write, we read what minari writes,
schema problems are named precisely, corruption is caught, writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest
from gymnasium import spaces
from minari.data_collector import EpisodeBuffer

from embodied_rl.datasets import (
    DatasetChecksumError,
    DatasetSchemaError,
    DatasetWriter,
    ImageCodec,
    load_dataset,
    validate_dataset,
    write_dataset,
)
from embodied_rl.datasets.minari_format import file_checksum

ID = "tests/synthetic-v0"


@pytest.fixture
def written(tmp_path, episodes, dataset_spaces):
    path = write_dataset(tmp_path, ID, episodes, *dataset_spaces, metadata={"ref_min_score": 0.0})
    return tmp_path, path


def _rehash(path) -> None:
    """Record the current checksum, so a deliberate schema change is what gets reported."""
    meta_path = path / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["embodied_rl"]["checksum"] = file_checksum(path / "data" / "main_data.hdf5")
    meta_path.write_text(json.dumps(meta))


def test_minari_reads_collected_dataset(collected, monkeypatch):
    root, result = collected
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    theirs = minari.load_dataset(result.dataset_id)
    ours = load_dataset(result.path)
    assert theirs.total_episodes == ours.n_episodes == 3
    assert theirs.total_steps == ours.n_transitions
    assert set(theirs.observation_space.spaces) == {"image", "instruction", "proprio", "state"}
    for index, episode in enumerate(theirs.iterate_episodes()):
        mine = ours.episode(index)
        for key in ("image", "proprio", "state"):
            np.testing.assert_array_equal(episode.observations[key], mine.observations[key])
        assert episode.observations["instruction"] == mine.observations["instruction"]
        assert episode.observations["instruction"][0] == mine.metadata["instruction"]
        np.testing.assert_array_equal(episode.actions, mine.actions)
        np.testing.assert_array_equal(episode.rewards, mine.rewards)
        np.testing.assert_array_equal(episode.terminations, mine.terminations)
        np.testing.assert_array_equal(episode.truncations, mine.truncations)
        assert episode.observations["image"].dtype == np.uint8
    (meta,) = theirs.storage.get_episode_metadata([1])
    assert meta["seed"] == 1 and meta["task"] == "reach" and "success" in meta
    env = theirs.recover_environment()  # env_spec is stored: minari rebuilds the environment
    assert env.observation_space == theirs.observation_space
    env.close()
    # minari's own normalized score uses the reference returns we stored (a fraction of 1)
    expert = theirs.storage.metadata["ref_max_score"]
    assert minari.get_normalized_score(theirs, np.array([expert]))[0] == pytest.approx(1.0)


def test_write_then_load_round_trip(written, episodes):
    root, path = written
    data = load_dataset(ID, root)
    assert data.n_episodes == 3 and data.n_transitions == 12
    for original, loaded in zip(episodes, data.episodes(), strict=True):
        for key in ("state", "image"):
            np.testing.assert_array_equal(original.observations[key], loaded.observations[key])
        assert original.observations["instruction"] == loaded.observations["instruction"]
        np.testing.assert_array_equal(original.rewards, loaded.rewards)
        np.testing.assert_array_equal(original.truncations, loaded.truncations)
        np.testing.assert_array_equal(original.infos["success"], loaded.infos["success"])
        assert loaded.metadata["domain"] == original.metadata["domain"]
    assert data.metadata["ref_min_score"] == 0.0
    assert (root / "tests" / "namespace_metadata.json").is_file()


def test_a_relative_path_that_looks_like_an_id_is_read_as_a_path(written, monkeypatch):
    """'runs/x+dpo/ns/name-v0' is a path (its name has '-v' but it is no valid
    'namespace/name-vN' id): read from the working directory, not rejected as a malformed id."""
    import shutil

    root, path = written
    shutil.copytree(root, root / "runs" / "rt2+dpo")
    monkeypatch.chdir(root)
    relative = Path("runs") / "rt2+dpo" / path.relative_to(root)
    assert "-v" in relative.name
    assert load_dataset(relative).n_episodes == 3
    assert load_dataset(ID, root).n_episodes == 3  # an id under a root still works


@pytest.mark.parametrize("codec", ["gzip", "lzf"])
def test_images_are_compressed_and_codec_recorded(tmp_path, episodes, dataset_spaces, codec):
    path = write_dataset(tmp_path, ID, episodes, *dataset_spaces, codec=ImageCodec(codec))
    with h5py.File(path / "data" / "main_data.hdf5") as f:
        image = f["episode_0/observations/image"]
        assert image.compression == codec and image.chunks is not None
        assert f["episode_0/observations/state"].compression is None
    meta = json.loads((path / "data" / "metadata.json").read_text())
    assert meta["embodied_rl"]["image_codec"]["codec"] == codec
    assert meta["jpeg_encoding"] is False  # minari must read frames as raw arrays


def test_reads_dataset_written_by_minari(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    rng = np.random.default_rng(0)
    buffers = [
        EpisodeBuffer(
            observations=rng.normal(size=(n + 1, 4)).astype(np.float32),
            actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
            rewards=list(rng.normal(size=n)),
            terminations=[False] * (n - 1) + [True],
            truncations=[False] * n,
        )
        for n in (5, 7)
    ]
    obs_space = spaces.Box(-np.inf, np.inf, (4,), np.float32)
    act_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    with pytest.warns(UserWarning):  # minari warns about missing author etc.
        minari.create_dataset_from_buffers(
            "theirs/box-v0", buffers, observation_space=obs_space, action_space=act_space
        )
    data = load_dataset("theirs/box-v0", tmp_path)
    assert data.n_episodes == 2 and data.episode_lengths.tolist() == [5, 7]
    np.testing.assert_array_equal(data.episode(1).observations, buffers[1].observations)
    np.testing.assert_allclose(data.episode(0).rewards, buffers[0].rewards)


def _drop_rewards(f):
    del f["episode_1/rewards"]


def _bad_shape(f):
    del f["episode_2/observations/state"]
    f["episode_2/observations/state"] = np.zeros((5, 4), np.float32)


def _bad_dtype(f):
    actions = f["episode_0/actions"][()]
    del f["episode_0/actions"]
    f["episode_0/actions"] = actions.astype(np.float64)


def _missing_obs_key(f):
    del f["episode_0/observations/image"]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_drop_rewards, r"episode_1 is missing 'rewards'"),
        (_bad_shape, r"episode_2/observations/state has shape \(5, 4\); expected \(5, 3\)"),
        (_bad_dtype, r"episode_0/actions has dtype float64; the space declares float32"),
        (_missing_obs_key, r"episode_0/observations is missing key 'image'"),
    ],
)
def test_schema_errors_name_the_problem(written, corrupt, message):
    root, path = written
    with h5py.File(path / "data" / "main_data.hdf5", "a") as f:
        corrupt(f)
    _rehash(path)
    with pytest.raises(DatasetSchemaError, match=message):
        load_dataset(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["embodied_rl"].update(format_version=99), r"format_version=99"),
        (lambda m: m.pop("action_space"), r"missing \['action_space'\]"),
        (lambda m: m.update(total_steps=13), r"total_steps=13; the episodes hold 12"),
        (lambda m: m.update(total_episodes=4), r"metadata says 4 episodes"),
    ],
)
def test_metadata_errors_name_the_problem(written, edit, message):
    _, path = written
    meta_path = path / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetSchemaError, match=message):
        validate_dataset(path)


def test_checksum_detects_corruption(written):
    _, path = written
    main = path / "data" / "main_data.hdf5"
    with h5py.File(main, "r") as f:
        offset = f["episode_1/rewards"].id.get_offset()  # a contiguous float64 array
    raw = bytearray(main.read_bytes())
    raw[offset + 3] ^= 0xFF
    main.write_bytes(bytes(raw))
    with h5py.File(main, "r") as f:  # still a readable HDF5 file, only the values changed
        assert f["episode_1/rewards"][0] != 11.0
    with pytest.raises(DatasetChecksumError, match="modified or corrupted"):
        load_dataset(path)
    assert load_dataset(path, verify=False).n_episodes == 3


def test_writer_is_atomic_and_refuses_to_clobber(tmp_path, episodes, dataset_spaces):
    with (
        pytest.raises(RuntimeError, match="stop"),
        DatasetWriter(tmp_path, ID, *dataset_spaces) as w,
    ):
        w.add(episodes[0])
        raise RuntimeError("stop")
    assert not (tmp_path / "tests").exists() or not any((tmp_path / "tests").iterdir())
    write_dataset(tmp_path, ID, episodes, *dataset_spaces)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_dataset(tmp_path, ID, episodes, *dataset_spaces)
    write_dataset(tmp_path, ID, episodes[:1], *dataset_spaces, overwrite=True)
    assert load_dataset(ID, tmp_path).n_episodes == 1
    assert sorted(p.name for p in (tmp_path / "tests").iterdir()) == [
        "namespace_metadata.json",
        "synthetic-v0",
    ]


def test_writer_rejects_inconsistent_episode(tmp_path, episodes, dataset_spaces):
    bad = episodes[0]
    bad.rewards = bad.rewards[:-1]
    with pytest.raises(
        DatasetSchemaError, match=r"episode_0/terminations has shape \(3,\).*expected \(2,\)"
    ):
        write_dataset(tmp_path, ID, [bad], *dataset_spaces)
    assert not (tmp_path / ID).exists()


def test_bad_dataset_id_is_rejected(tmp_path, episodes, dataset_spaces):
    with pytest.raises(ValueError, match="malformed"):
        write_dataset(tmp_path, "no-version", episodes, *dataset_spaces)


def test_list_datasets_reads_metadata_and_names_problems(tmp_path, episodes, dataset_spaces,
                                                         capsys):  # fmt: skip
    from embodied_rl.cli import main
    from embodied_rl.datasets import list_datasets

    write_dataset(tmp_path, ID, episodes, *dataset_spaces,
                  metadata={"ref_min_score": -1.0, "ref_max_score": 2.0})  # fmt: skip
    broken = write_dataset(tmp_path, "tests/broken-v1", episodes[:1], *dataset_spaces)
    found = list_datasets(tmp_path)
    assert [d.dataset_id for d in found] == ["tests/broken-v1", ID]
    good = found[1]
    assert (good.episodes, good.steps) == (len(episodes), sum(len(e) for e in episodes))
    assert good.ref_scores == (-1.0, 2.0) and good.problem is None and good.megabytes > 0
    assert good.path == tmp_path / ID
    assert main(["datasets", "list", "--root", str(tmp_path)]) == 0
    assert ID in capsys.readouterr().out
    meta_path = broken / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("total_steps")
    meta_path.write_text(json.dumps(meta))
    found = list_datasets(tmp_path)
    assert "missing ['total_steps']" in found[0].problem and found[0].episodes is None
    assert main(["datasets", "list", "--root", str(tmp_path)]) == 1
    assert "PROBLEM" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="not a directory"):
        list_datasets(tmp_path / "absent")
