import pytest

from embodied_rl.utils.io import atomic_path, write_text_atomic


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "table.md"
    write_text_atomic(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    from embodied_rl.policies import MLPConfig, MLPPolicy
    from embodied_rl.utils.io import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "report.md", "x")
        saved = MLPPolicy(MLPConfig(hidden=(8,))).save(tmp_path / "policy")  # a temp dir renamed
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
    assert saved.stat().st_mode & 0o777 == 0o755
    assert (saved / "config.json").stat().st_mode & 0o777 == 0o644
