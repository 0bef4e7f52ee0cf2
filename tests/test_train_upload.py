"""Clips uploaded from the browser (`wan_ui.train.upload`), without Gradio: loose files and zips into a new dataset
folder inside the training data folder; traversal names, links, wrong types, size and the folder name refused with
nothing left behind."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest
from train_files import write_dataset

from wan_ui.core.errors import ValidationError
from wan_ui.train.data import discover_clips
from wan_ui.train.job import dataset_folders
from wan_ui.train.upload import import_dataset, plan_upload


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Two captioned clips as a browser would upload them (clip0.mp4, clip0.txt, clip1.mp4, clip1.txt)."""
    return write_dataset(tmp_path_factory.mktemp("upload_src"), 2)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """The training data folder, through its environment variable as the app reads it."""
    data = tmp_path / "train_data"
    monkeypatch.setenv("WAN_UI_TRAIN_DIR", str(data))
    return data


def loose(clips: Path) -> list[Path]:
    return sorted(clips.iterdir())


def make_zip(path: Path, members: dict[str, bytes | Path]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data.read_bytes() if isinstance(data, Path) else data)
    return path


def entries(root: Path) -> list[str]:
    """Everything in the training data folder, hidden staging folders included."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_loose_clips_and_captions_become_a_new_dataset_folder(clips, root):
    imported = import_dataset(loose(clips), "squares")
    assert imported.folder == root.resolve() / "squares" and imported.clips == 2 and imported.skipped == []
    assert sorted(p.name for p in imported.folder.iterdir()) == ["clip0.mp4", "clip0.txt", "clip1.mp4", "clip1.txt"]
    assert imported.size == sum(p.stat().st_size for p in loose(clips))
    assert (imported.folder / "clip1.mp4").read_bytes() == (clips / "clip1.mp4").read_bytes()
    assert entries(root) == ["squares"] and dataset_folders() == ["squares"]  # no staging folder left
    assert "2 captioned clip(s)" in imported.summary() and "`squares`" in imported.summary()


def test_a_zip_with_folders_and_metadata_unpacks_and_mac_clutter_is_left_out(clips, root, tmp_path):
    members = {"set/a.mp4": clips / "clip0.mp4", "set/b.MOV": clips / "clip1.mp4",
               "metadata.jsonl": b'{"file": "set/a.mp4", "caption": "a square"}\n'
                                 b'{"file": "set/b.MOV", "caption": "another square"}\n',
               "__MACOSX/set/._a.mp4": b"resource fork", "set/.DS_Store": b"finder"}
    imported = import_dataset([make_zip(tmp_path / "clips.zip", members)], "zipped")
    assert imported.clips == 2
    found, _ = discover_clips(imported.folder)
    assert [c.caption for c in found] == ["a square", "another square"]
    assert not (imported.folder / "__MACOSX").exists() and not (imported.folder / "set" / ".DS_Store").exists()


@pytest.mark.parametrize("name", ["../escape.txt", "set/../../escape.txt", "/etc/escape.txt", "set\\..\\escape.txt",
                                  "C:escape.txt", "set//escape.txt", "./escape.txt"])
def test_zip_names_that_leave_the_folder_are_refused_and_nothing_is_written(clips, root, tmp_path, name):
    archive = make_zip(tmp_path / "evil.zip", {"clip0.mp4": clips / "clip0.mp4", "clip0.txt": b"a square",
                                               name: b"escaped"})
    with pytest.raises(ValidationError, match="unsafe name") as e:
        import_dataset([archive], "evil")
    assert e.value.field == "upload" and repr(name) in str(e.value)
    assert entries(root) == [] and not (tmp_path / "escape.txt").exists()


def test_a_link_in_a_zip_is_refused(clips, root, tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("clip0.mp4", (clips / "clip0.mp4").read_bytes())
        link = zipfile.ZipInfo("clip0.txt")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16  # how zip -y stores a symlink: its target as the data
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ValidationError, match="'clip0.txt' is a link"):
        import_dataset([path], "linked")
    assert entries(root) == []


@pytest.mark.parametrize("bad", ["run.sh", "clip.avi", "inner.zip", "notes"])
def test_files_that_are_no_clip_or_caption_are_refused_loose_or_zipped(clips, root, tmp_path, bad):
    other = tmp_path / bad
    other.write_bytes(b"not a clip")
    with pytest.raises(ValidationError, match=rf"{bad}.* is not a clip or a caption \(allowed: .mp4 .mov .webm .mkv "
                                              rf".txt .jsonl, or a .zip of them\)"):
        import_dataset([*loose(clips), other] if bad != "inner.zip" else
                       [make_zip(tmp_path / "outer.zip", {"clip0.mp4": clips / "clip0.mp4", bad: b"x"})], "typed")
    assert entries(root) == []


def test_the_size_bound_counts_what_a_zip_unpacks_to(clips, root, tmp_path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:  # 3 MB of zeros compress to a few KB
        z.writestr("clip0.mp4", (clips / "clip0.mp4").read_bytes())
        z.writestr("clip0.txt", b"a square")
        z.writestr("padding.txt", bytes(3_000_000))
    assert archive.stat().st_size < 100_000
    with pytest.raises(ValidationError, match=r"unpacks to 3 MB, more than the 2 MB one upload may hold"):
        import_dataset([archive], "big", max_bytes=2_000_000)
    assert entries(root) == []
    assert import_dataset([archive], "big", max_bytes=4_000_000).clips == 1


def test_a_zip_whose_header_understates_a_member_is_refused_and_removed(clips, root, tmp_path):
    """The central directory says 10 bytes; unpacking stops there and the CRC check fails: nothing is kept."""
    archive = make_zip(tmp_path / "lies.zip", {"clip0.mp4": clips / "clip0.mp4", "clip0.txt": b"a square" * 100})
    data = bytearray(archive.read_bytes())
    central = data.rindex(b"PK\x01\x02")  # the last member's central directory entry: clip0.txt
    data[central + 24:central + 28] = (10).to_bytes(4, "little")  # its uncompressed size
    archive.write_bytes(bytes(data))
    with pytest.raises(ValidationError, match="'clip0.txt' does not unpack"):
        import_dataset([archive], "lies")
    assert entries(root) == []


@pytest.mark.parametrize("name, message", [("", "dataset_name has the wrong form"),
                                           ("../outside", "dataset_name has the wrong form"),
                                           ("a/b", "dataset_name has the wrong form"),
                                           (".hidden", "dataset_name has the wrong form"),
                                           ("x" * 101, "dataset_name must be at most 100 characters")])
def test_the_folder_name_is_a_plain_new_name(clips, root, name, message):
    with pytest.raises(ValidationError, match=message) as e:
        import_dataset(loose(clips), name)
    assert e.value.field == "dataset_name" and entries(root) == []


def test_an_existing_folder_or_a_link_out_of_the_root_is_never_written_into(clips, root, tmp_path):
    import_dataset(loose(clips), "squares")
    with pytest.raises(ValidationError, match="'squares' already exists"):
        import_dataset(loose(clips), "squares")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "linked")
    with pytest.raises(ValidationError, match="outside the training data folder|already exists"):
        import_dataset(loose(clips), "linked")
    assert list(outside.iterdir()) == [] and entries(root) == ["linked", "squares"]


def test_an_upload_without_a_captioned_clip_keeps_nothing(clips, root):
    with pytest.raises(ValidationError, match=r"no captioned clip.*clip0.mp4: no caption") as e:
        import_dataset([clips / "clip0.mp4"], "uncaptioned")
    assert e.value.field == "upload" and entries(root) == []
    with pytest.raises(ValidationError, match="choose the clips to upload"):
        import_dataset([], "empty")


def test_two_files_for_one_place_are_refused(clips, tmp_path):
    archive = make_zip(tmp_path / "dup.zip", {"clip0.txt": b"another caption"})
    with pytest.raises(ValidationError, match="both named 'clip0.txt'"):
        plan_upload([*loose(clips), archive])
