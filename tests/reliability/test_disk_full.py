"""Disk full and read-only destinations: a clear WriteError, no partial or temporary file, and
the previous version of the artifact (same path, overwrite=True) intact and loadable.

Real filesystems where the test may mount them (root with CAP_SYS_ADMIN): a small tmpfs, filled
up or remounted read-only. Everywhere: the same failures injected into the write path (ENOSPC
halfway through a copy, at fsync, on the manifest; EACCES/EROFS on the first file created).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

import jupyter_modelsave as jms
from jupyter_modelsave.core import artifacts, hashing

from ._destination import check_whole
from ._writer_child import stage, target_in

KINDS = ("safetensors", "safetensors_sharded")  # a file artifact and a folder artifact


@pytest.fixture(scope="module", params=KINDS)
def versions(request):
    """(new, old): two contents of the same tiny model in one format."""
    new, old = stage(request.param, 0), stage(request.param, 1)
    yield new, old
    new.discard()
    old.discard()


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry of the folder, hidden ones included, with a hash of its content."""
    return {
        name: hashing.sha256_of(folder / name)
        if (folder / name).is_dir()
        else hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(folder))
    }


def with_previous(folder: Path, old) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return old.write(target_in(folder, old))


def assert_untouched(folder: Path, before: dict[str, str], previous: Path, old) -> None:
    assert snapshot(folder) == before  # no partial file, no temporary, nothing replaced
    assert check_whole(previous, {old.sha256}) == "complete"


# --- injected faults: run everywhere ------------------------------------------------------------


def _force_copies(monkeypatch, staged) -> None:
    """Links from the staging folder fail as across filesystems (a link needs no free space)."""
    real_link = os.link

    def link(src, dst, *args, **kwargs):
        if str(src).startswith(str(staged.path)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(artifacts.os, "link", link)


def _enospc(*_args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_copy_then_enospc(src, dst, *args, **kwargs):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: len(data) // 2])
    _enospc()


def _half_manifest_then_enospc(data, tmp):
    Path(tmp).write_bytes(data[: len(data) // 2])
    _enospc()


INJECTED_ENOSPC = {
    "halfway through the copy": lambda mp: mp.setattr(
        artifacts.shutil, "copyfile", _half_copy_then_enospc
    ),
    "at fsync (delayed allocation)": lambda mp: mp.setattr(artifacts.os, "fsync", _enospc),
    "writing the manifest": lambda mp: mp.setattr(
        artifacts, "_write_bytes", _half_manifest_then_enospc
    ),
}


@pytest.mark.parametrize("overwrite", [True, False], ids=["over previous", "new version"])
@pytest.mark.parametrize("when", list(INJECTED_ENOSPC))
def test_disk_full_midway_raises_write_error_and_leaves_the_folder_as_it_was(
    tmp_path, versions, monkeypatch, when, overwrite
):
    # Given a previous version in the folder, and a disk that fills up while the new one is written
    new, old = versions
    previous = with_previous(tmp_path, old)
    before = snapshot(tmp_path)
    _force_copies(monkeypatch, new)
    INJECTED_ENOSPC[when](monkeypatch)
    # When the new version is written over it (or beside it, under a new versioned name)
    dest = previous if overwrite else f"{tmp_path}/"
    with pytest.raises(jms.WriteError, match="disk is full") as caught:
        new.write(dest, overwrite=overwrite)
    # Then a clear ModelSaveError, and the folder is exactly as before
    assert isinstance(caught.value, jms.ModelSaveError) and caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert_untouched(tmp_path, before, previous, old)


@pytest.mark.parametrize(
    ("code", "says"),
    [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only")],
    ids=["EACCES", "EROFS"],
)
def test_a_refused_file_creation_raises_write_error_and_keeps_the_previous_version(
    tmp_path, versions, monkeypatch, code, says
):
    # Given a previous version, and a folder where creating a file is refused
    new, old = versions
    previous = with_previous(tmp_path, old)
    before = snapshot(tmp_path)

    def refused(*_args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(artifacts, "_copy_file", refused)
    monkeypatch.setattr(artifacts, "_copy_tree", refused)
    # When the new version is written over it
    with pytest.raises(jms.WriteError, match=says) as caught:
        new.write(previous, overwrite=True)
    # Then WriteError with the reason, and the previous version as it was
    assert caught.value.errno == code
    monkeypatch.undo()
    assert_untouched(tmp_path, before, previous, old)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_a_folder_without_write_permission_raises_write_error(tmp_path, versions):
    new, old = versions
    previous = with_previous(tmp_path, old)
    before = snapshot(tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(jms.WriteError, match="not writable"):
            new.write(previous, overwrite=True)
    finally:
        tmp_path.chmod(0o755)
    assert_untouched(tmp_path, before, previous, old)


# --- real filesystems: a tmpfs mounted by the test ----------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path``; skips the test where mounting is not permitted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the filesystem of ``folder`` until about ``leave`` bytes are free."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def test_a_full_tmpfs_refuses_before_writing_and_keeps_the_previous_version(tmp_path, versions):
    new, old = versions
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        # Given a previous version on a filesystem with less room than the new version needs
        previous = with_previous(mnt, old)
        fill(mnt, leave=0)
        before = snapshot(mnt)
        # When the new version is written over it
        with pytest.raises(jms.WriteError, match="Not enough space") as caught:
            new.write(previous, overwrite=True)
        # Then WriteError(ENOSPC) and the folder exactly as before
        assert caught.value.errno == errno.ENOSPC
        assert_untouched(mnt, before, previous, old)


def test_a_tmpfs_that_fills_up_during_the_copy_keeps_the_previous_version(
    tmp_path, versions, monkeypatch
):
    new, old = versions
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        # Given a previous version, and another process taking the space after the free-space check
        previous = with_previous(mnt, old)
        fill(mnt, leave=0)
        before = snapshot(mnt)
        monkeypatch.setattr(artifacts.shutil, "disk_usage", lambda p: SimpleNamespace(free=1 << 40))
        # When the new version is written over it: the kernel says ENOSPC during the copy
        with pytest.raises(jms.WriteError, match="disk is full") as caught:
            new.write(previous, overwrite=True)
        # Then WriteError(ENOSPC) and the folder exactly as before
        assert caught.value.errno == errno.ENOSPC
        monkeypatch.undo()
        assert_untouched(mnt, before, previous, old)


def test_a_tmpfs_with_room_for_the_artifact_but_not_its_manifest_keeps_the_previous_version(
    tmp_path, versions, monkeypatch
):
    new, old = versions
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        # Given a previous version, and room left for the new artifact's pages and no more
        previous = with_previous(mnt, old)
        fill(mnt, leave=sum(-(-f.stat().st_size // 4096) * 4096 for f in _files(new.path)))
        before = snapshot(mnt)
        monkeypatch.setattr(artifacts.shutil, "disk_usage", lambda p: SimpleNamespace(free=1 << 40))
        failed = []
        real_write_bytes = artifacts._write_bytes

        def write_manifest(data, tmp):
            try:
                real_write_bytes(data, tmp)
            except OSError as err:
                failed.append(err.errno)
                raise

        monkeypatch.setattr(artifacts, "_write_bytes", write_manifest)
        # When the new version is written over it: the artifact fits, its manifest does not
        with pytest.raises(jms.WriteError, match="disk is full"):
            new.write(previous, overwrite=True)
        assert failed == [errno.ENOSPC]
        # Then the folder is exactly as before
        monkeypatch.undo()
        assert_untouched(mnt, before, previous, old)


def _files(path: Path) -> list[Path]:
    return [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]


def test_a_read_only_mount_raises_write_error_and_keeps_the_previous_version(tmp_path, versions):
    new, old = versions
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        # Given a previous version on a filesystem remounted read-only
        previous = with_previous(mnt, old)
        before = snapshot(mnt)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        # When the new version is written over it, or beside it under a new name
        for dest, overwrite in ((previous, True), (f"{mnt}/", False)):
            with pytest.raises(jms.WriteError, match="read-only") as caught:
                new.write(dest, overwrite=overwrite)
            assert caught.value.errno == errno.EROFS
        # Then the folder is exactly as before
        assert_untouched(mnt, before, previous, old)
