"""Atomic writes (wan_ui/core/files.py): the target is either the old content or the complete new one."""

import os
import stat
import threading

import pytest

from wan_ui.core.errors import first_line
from wan_ui.core import video
from wan_ui.core.files import atomic_path, temporary_sibling, write_text_atomic


def test_a_file_replaces_the_target_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "settings.json"
    write_text_atomic(target, "old")
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError("No space left on device")
    assert target.read_text() == "old"
    assert sorted(os.listdir(target.parent)) == ["settings.json"]  # no temporary file left
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and sorted(os.listdir(target.parent)) == ["settings.json"]


def test_a_folder_replaces_an_existing_folder(tmp_path):
    target = tmp_path / "model"
    (target / "old").mkdir(parents=True)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("w")
    assert sorted(os.listdir(target)) == ["weights"] and sorted(os.listdir(tmp_path)) == ["model"]


def test_a_key_file_is_its_owners_only_from_its_creation(tmp_path, monkeypatch):
    target = tmp_path / "history.key"
    seen = []
    replace = os.replace

    def check_mode(src, dst):  # the temporary file, before it takes the final name
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", check_mode)
    write_text_atomic(target, "k1", mode=0o600)
    write_text_atomic(target, "k2", mode=0o600)  # replacing an existing key
    assert seen == [0o600, 0o600] and stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "k2"
    assert os.listdir(tmp_path) == ["history.key"]


def test_the_temporary_name_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "clip.mp4") as tmp:
        assert tmp.suffix == ".mp4" and tmp.name.startswith(".clip.") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")


def test_two_threads_writing_one_file_at_once_both_succeed(tmp_path):
    """Two jobs of one app save the same settings file at once: each thread writes its own temporary file (with one
    shared name, the first rename took the second's file away: FileNotFoundError)."""
    target, errors, start = tmp_path / "last.json", [], threading.Barrier(2)

    def write(text):
        start.wait()
        try:
            for _ in range(200):
                write_text_atomic(target, text)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(text,)) for text in ("a" * 5000, "b" * 5000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.read_text() in ("a" * 5000, "b" * 5000) and os.listdir(tmp_path) == ["last.json"]


def test_a_killed_writers_temporary_name_is_found_by_its_process_id(tmp_path):
    """video.remove_stale_files reads the process id just before the tag: the thread id before it changes nothing."""
    name = temporary_sibling(tmp_path / "last.json").name
    match = video._OUR_TEMPORARY.match(name)
    assert match and int(match.group("pid")) == os.getpid() and str(threading.get_native_id()) in name


def test_first_line_of_an_exception():
    assert first_line(RuntimeError("\n  CUDA error: out of memory\nstack...")) == "CUDA error: out of memory"
    assert first_line(RuntimeError("")) == ""
    assert first_line(ValueError("x" * 500), limit=10) == "x" * 10
