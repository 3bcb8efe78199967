"""dgiqa_cli.io.atomic: the one way the package writes a whole file (outputs, caches, checkpoints, registries)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from dgiqa_cli.io.atomic import PendingFile, atomic_path, atomic_write


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_existing_file_keeps_its_mode_and_a_new_one_gets_the_umask_default(tmp_path):
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    os.chmod(kept, 0o640)
    with atomic_write(kept, "w") as file:
        file.write("new")
    assert kept.read_text() == "new" and mode_of(kept) == 0o640

    previous = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "new.bin") as file:
            file.write(b"\x00\x01")
        with atomic_path(tmp_path / "by-path.bin") as temp:
            temp.write_bytes(b"written by a path-taking writer")
    finally:
        os.umask(previous)
    assert mode_of(tmp_path / "new.bin") == 0o640  # 0o666 & ~0o027, as open() would make it, never 0o600
    assert mode_of(tmp_path / "by-path.bin") == 0o640
    assert (tmp_path / "by-path.bin").read_bytes() == b"written by a path-taking writer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["by-path.bin", "kept.json", "new.bin"]


def test_two_writers_to_one_target_each_have_their_own_temporary_file(tmp_path):
    """Both writers are inside their block at once (a barrier holds them there): neither clobbers the other's
    temporary file, both succeed, and the target holds one of the two contents whole."""
    target = tmp_path / "metrics.json"
    both_writing = threading.Barrier(2)
    temps, errors = [], []

    def write(text: str) -> None:
        try:
            with atomic_path(target) as temp:
                temps.append(temp)
                temp.write_text(text * 10_000)
                both_writing.wait(timeout=30)
                assert temp.read_text() == text * 10_000  # nobody wrote over it meanwhile
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(text,)) for text in ("a", "b")]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=60)
    assert errors == [] and len(set(temps)) == 2
    assert target.read_text() in ("a" * 10_000, "b" * 10_000)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_an_exception_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_write(target) as file:
        file.write(b"half of the new one")
        raise RuntimeError("disk on fire")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temp:
        temp.write_bytes(b"half again")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_pending_file_is_named_by_its_prefix_and_committed_or_discarded(tmp_path):
    target = tmp_path / "rows.parquet"
    pending = PendingFile(target, prefix=".rows.parquet.partial-")
    assert pending.temp.parent == tmp_path and pending.temp.name.startswith(".rows.parquet.partial-")
    pending.temp.write_bytes(b"rows")
    assert pending.commit() == target and target.read_bytes() == b"rows"
    dropped = PendingFile(target, prefix=".rows.parquet.partial-")
    dropped.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"), atomic_write(target, "a"):
        pass
