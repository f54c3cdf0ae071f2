"""bench: bad arguments stop before any work."""
from __future__ import annotations

from sublora import bench


def test_cache_dir_must_be_empty(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "file").write_text("")
    for bad in ("full", "file"):
        assert bench.main(["--cache-dir", str(tmp_path / bad)]) == 2
        assert "is not an empty directory" in capsys.readouterr().err
