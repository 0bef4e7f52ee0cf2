"""Training clips uploaded from the browser, copied into a new dataset folder inside the training data folder.

`import_dataset(files, name)`:
  1. check the new folder's name (`FOLDER_SPEC`), confine it to the training data folder (`job.train_data_dir`,
     `$WAN_UI_TRAIN_DIR`, through `paths.confine`) and refuse one that exists: an upload never mixes with a dataset;
  2. plan every file before writing any (`plan_upload`): loose files and the members of .zip files, each a video
     (UPLOAD_VIDEO_SUFFIXES) or a caption (CAPTION_SUFFIXES). A zip member's name may hold folders, never an
     absolute path, a drive, a backslash, '..' or a link; an encrypted member is refused. The files' total size (a
     zip's members as they unpack) is bounded by MAX_UPLOAD_BYTES and must fit on the disk;
  3. copy and unpack into a hidden temporary folder beside it, counting the bytes as they are written (a zip's
     declared sizes may lie), and read it back as the trainer will (`data.discover_clips`): without a captioned
     clip the folder is removed and the refusal says what was skipped;
  4. rename it to the new name, so the dataset dropdown (which skips hidden folders) never lists half an upload.

Every refusal is a ValidationError naming the file and what is allowed; nothing is left behind by one.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from wan_ui.core.errors import ValidationError
from wan_ui.core.fields import FieldSpec
from wan_ui.core.paths import confine
from wan_ui.core.video import storage_error
from wan_ui.train.data import Skipped, discover_clips, format_skipped
from wan_ui.train.job import train_data_dir

UPLOAD_VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")  # what browsers record and ffmpeg reads
CAPTION_SUFFIXES = (".txt", ".jsonl")  # a caption beside its clip, or metadata.jsonl (train/data.py)
ZIP_SUFFIX = ".zip"
# Bytes of one upload once unpacked: a LoRA is trained on tens of short clips (docs/TRAINING.md), a few MB each as
# H.264 at 832x480, so 2 GB holds hundreds; more is a folder to copy onto the server, not a browser upload.
MAX_UPLOAD_BYTES = 2 * 10**9
MAX_FILES = 2000  # files in one upload (a clip and its caption are two)
# macOS's Archive Utility adds these to every zip; they are no clips and are left out without a word
_ZIP_CLUTTER_DIRS = ("__MACOSX",)
_ZIP_CLUTTER_FILES = (".DS_Store",)
CHUNK = 1 << 20  # bytes copied at a time
FOLDER_SPEC = FieldSpec("dataset_name", kind="str", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", max_length=100,
                        help="1-100 letters, digits, '_', '-' or '.', starting with a letter or digit")


@dataclass(frozen=True)
class PlannedFile:
    relative: str  # where it goes inside the dataset folder (posix)
    size: int  # bytes it will take
    source: Path  # the uploaded file (a loose file, or the zip holding it)
    member: zipfile.ZipInfo | None = None  # the zip member, or None for a loose file


@dataclass
class Imported:
    folder: Path  # the new dataset folder
    clips: int  # captioned clips the trainer will find there
    skipped: list[Skipped] = field(default_factory=list)  # what it will skip, and why
    size: int = 0  # bytes written

    def summary(self) -> str:
        skipped = "" if not self.skipped else f"; {format_skipped(self.skipped)}"
        return (f"Uploaded {self.clips} captioned clip(s) ({self.size / 1e6:.1f} MB) into the dataset folder "
                f"`{self.folder.name}`, now chosen as the Dataset folder{skipped}")


def import_dataset(files: list[str | Path], name: str, root: Path | None = None,
                   max_bytes: int = MAX_UPLOAD_BYTES) -> Imported:
    """Uploaded `files` (videos, captions, .zip archives of them) -> a new dataset folder `name` in `root` (the
    training data folder by default). See the module docstring for the checks."""
    root = (root or train_data_dir()).resolve()
    folder = new_folder(name, root)
    plan = plan_upload(files, max_bytes)
    root.mkdir(parents=True, exist_ok=True)
    size, free = sum(p.size for p in plan), shutil.disk_usage(root).free
    if size > free:
        raise ValidationError(f"the upload unpacks to {size / 1e6:.0f} MB, more than the {free / 1e6:.0f} MB free in "
                              f"the training data folder", field="upload")
    staging = Path(tempfile.mkdtemp(prefix=f".upload-{folder.name}-", dir=root))  # hidden: not listed as a dataset
    try:
        written = sum(_write(p, staging) for p in plan)
        clips, skipped = discover_clips(staging)
        if not clips:
            reasons = "; ".join(f"{s.file}: {s.reason}" for s in skipped[:10]) or "no video file"
            raise ValidationError(f"the upload holds no captioned clip (a video with a .txt of the same name beside "
                                  f"it, or a metadata.jsonl line): {reasons}", field="upload")
        if folder.exists():  # made while this upload was copied
            raise ValidationError(f"dataset folder {folder.name!r} already exists; choose a new name",
                                  field="dataset_name")
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Imported(folder, len(clips), skipped, written)


def new_folder(name, root: Path) -> Path:
    """The new dataset folder's path: a plain name (FOLDER_SPEC) inside `root` that does not exist yet."""
    text = FOLDER_SPEC.check(str(name or "").strip())
    folder = confine(text, root, "dataset_name", "dataset folder", "the training data folder")
    if folder.exists() or folder.is_symlink():
        raise ValidationError(f"dataset folder {text!r} already exists in the training data folder; an upload goes "
                              f"into a new folder: choose another name", field="dataset_name")
    return folder


# ---- 2. the plan --------------------------------------------------------------------------------------------
def plan_upload(files: list[str | Path], max_bytes: int = MAX_UPLOAD_BYTES) -> list[PlannedFile]:
    """Every file the upload writes, checked (names, types, count, total size) before anything is written."""
    if not files:
        raise ValidationError("choose the clips to upload: video files with their .txt captions, or a .zip of them",
                              field="upload")
    plan: list[PlannedFile] = []
    for path in map(Path, files):
        if path.suffix.lower() == ZIP_SUFFIX:
            plan += _plan_zip(path)
        else:
            plan.append(PlannedFile(_checked_name(path.name, path.name), path.stat().st_size, path))
    seen: set[str] = set()
    for p in plan:
        if p.relative.lower() in seen:  # two files to one place (or two that differ only in case)
            raise ValidationError(f"two uploaded files are both named {p.relative!r}; rename one", field="upload")
        seen.add(p.relative.lower())
    if len(plan) > MAX_FILES:
        raise ValidationError(f"the upload holds {len(plan)} files, more than {MAX_FILES}", field="upload")
    total = sum(p.size for p in plan)
    if total > max_bytes:
        raise ValidationError(f"the upload unpacks to {total / 1e6:.0f} MB, more than the {max_bytes / 1e6:.0f} MB "
                              f"one upload may hold; copy a larger dataset into the training data folder on the "
                              f"server", field="upload")
    return plan


def _plan_zip(path: Path) -> list[PlannedFile]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ValidationError(f"{path.name} is not a readable zip file ({e})", field="upload") from None
    plan = []
    for info in members:
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or (parts and parts[0] in _ZIP_CLUTTER_DIRS) or (parts and parts[-1] in _ZIP_CLUTTER_FILES):
            continue
        where = f"{path.name}: {info.filename!r}"
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ValidationError(f"{where} is a link; a dataset zip holds plain files only", field="upload")
        if info.flag_bits & 0x1:  # encrypted (the zip format's general purpose bit 0)
            raise ValidationError(f"{where} is encrypted; zip the clips without a password", field="upload")
        plan.append(PlannedFile(_checked_name(info.filename, where), info.file_size, path, info))
    return plan


def _checked_name(name: str, where: str) -> str:
    """A safe relative posix path with an allowed suffix, or a ValidationError naming the file."""
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or ":" in name or any(p in ("", ".", "..") for p in parts)
            or any(ord(c) < 32 for c in name)):
        raise ValidationError(f"{where} has an unsafe name (an absolute path, a drive, a backslash, '..' or an "
                              f"empty part); files may only go into the new dataset folder", field="upload")
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in UPLOAD_VIDEO_SUFFIXES + CAPTION_SUFFIXES:
        allowed = " ".join(UPLOAD_VIDEO_SUFFIXES + CAPTION_SUFFIXES)
        raise ValidationError(f"{where} is not a clip or a caption (allowed: {allowed}, or a {ZIP_SUFFIX} of them)",
                              field="upload")
    return name


# ---- 3. writing ----------------------------------------------------------------------------------------------
def _write(planned: PlannedFile, folder: Path) -> int:
    """Copy one planned file into `folder` (confined to it once more), at most its planned size; bytes written.
    A member that does not unpack, or a write the file system refuses, is a one-line error naming the file."""
    dest = confine(planned.relative, folder, "upload", "uploaded file", "the new dataset folder")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if planned.member is None:
            with open(planned.source, "rb") as src:
                return _copy(src, dest, planned)
        with zipfile.ZipFile(planned.source) as archive, archive.open(planned.member) as src:
            return _copy(src, dest, planned)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a bad CRC, corrupt or cut-short data
        raise ValidationError(f"{planned.source.name}: {planned.relative!r} does not unpack ({e})",
                              field="upload") from None
    except OSError as e:  # no space left, a file where a folder should go, ...
        raise storage_error(e, planned.relative, field="upload") from None


def _copy(src: BinaryIO, dest: Path, planned: PlannedFile) -> int:
    written = 0
    with open(dest, "xb") as out:
        while block := src.read(CHUNK):
            written += len(block)
            if written > planned.size:  # a zip member larger than its header says, or a file that grew
                raise ValidationError(f"{planned.relative} is larger than its declared {planned.size} bytes",
                                      field="upload")
            out.write(block)
    return written
