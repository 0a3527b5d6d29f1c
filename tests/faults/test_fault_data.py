"""A truncated dataset file gives an error naming the file, whichever way it is read."""

from __future__ import annotations

import json
import shutil

import pytest

from embodied_rl.datasets import DatasetChecksumError, DatasetSchemaError, load_dataset
from embodied_rl.datasets.minari_reader import validate_dataset


@pytest.fixture
def cut_copy(reach_dataset, tmp_path, truncate):
    copy = tmp_path / "reach"
    shutil.copytree(reach_dataset, copy)
    truncate(copy / "data" / "main_data.hdf5", 0.5)
    return copy


def test_truncated_file_fails_its_checksum(cut_copy):
    main = cut_copy / "data" / "main_data.hdf5"
    with pytest.raises(DatasetChecksumError, match=str(main)):
        load_dataset(cut_copy)
    with pytest.raises(DatasetChecksumError, match="corrupted"):
        validate_dataset(cut_copy)


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_truncated_file_without_a_checksum_is_a_schema_error_naming_it(
    reach_dataset, tmp_path, truncate, fraction
):
    """Minari's own datasets record no checksum; verify=False skips it: h5py's error does not
    name the file, ours does."""
    copy = tmp_path / "reach"
    shutil.copytree(reach_dataset, copy)
    meta_path = copy / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["embodied_rl"]["checksum"]
    meta_path.write_text(json.dumps(meta))
    truncate(copy / "data" / "main_data.hdf5", fraction)
    main = copy / "data" / "main_data.hdf5"
    for verify in (True, False):
        with pytest.raises(DatasetSchemaError, match=f"{main}.*truncated or corrupt"):
            load_dataset(copy, verify=verify)


def test_truncated_metadata_names_the_file(reach_dataset, tmp_path, truncate):
    copy = tmp_path / "reach"
    shutil.copytree(reach_dataset, copy)
    truncate(copy / "data" / "metadata.json", 0.5)
    with pytest.raises(DatasetSchemaError, match="metadata.json is not valid JSON"):
        load_dataset(copy)
