"""files.staged_dir: a folder appears under its final name only complete, and a failure keeps the old one."""

import pytest

from exme.files import staged_dir


def test_staged_dir_replaces_the_old_folder_only_on_success(tmp_path):
    out_dir = tmp_path / "model"
    out_dir.mkdir()
    (out_dir / "old.txt").write_text("old")

    with staged_dir(out_dir) as staging:
        (staging / "new.txt").write_text("new")
        assert staging.parent == tmp_path and staging != out_dir
        assert (out_dir / "old.txt").exists()

    assert sorted(path.name for path in out_dir.iterdir()) == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_staged_dir_failure_keeps_the_old_folder_and_removes_the_staging(tmp_path):
    out_dir = tmp_path / "model"
    out_dir.mkdir()
    (out_dir / "old.txt").write_text("old")

    with pytest.raises(RuntimeError, match="killed"), staged_dir(out_dir) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed")

    assert sorted(path.name for path in out_dir.iterdir()) == ["old.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_staged_dir_failure_creates_nothing_under_a_new_name(tmp_path):
    with pytest.raises(RuntimeError), staged_dir(tmp_path / "sub" / "model"):
        raise RuntimeError("killed")
    assert list((tmp_path / "sub").iterdir()) == []
