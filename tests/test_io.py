"""Atomic writes and the clean-up of temporaries that a killed writer leaves behind."""
import pytest

from diffrepro.io import _TEMPORARY, atomic_path, atomic_write_text, remove_stale_temporaries


def test_failed_write_leaves_neither_output_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            assert _TEMPORARY.match(tmp.name), tmp.name
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    atomic_write_text(tmp_path / "keep.txt", "done")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / ".gitignore").write_text("x")                  # hidden, but not a temporary
    for name in (".resume.pt.1oywbfpd.pt", "ckpt/.model.pt.a_b9c0d1.pt", ".metrics.parquet.zz99yy88.parquet"):
        (tmp_path / name).write_bytes(b"partial")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".metrics.parquet.zz99yy88.parquet", ".model.pt.a_b9c0d1.pt",
                                               ".resume.pt.1oywbfpd.pt"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [".gitignore", "keep.txt"]
