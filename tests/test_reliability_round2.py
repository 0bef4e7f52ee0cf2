"""Writing a video is checked, and a cancel says what happened (docs/RELIABILITY.md, "Round two"), on CPU with the
tiny model: an encoder that dies after the frames were sent, a full disk, no permission or a read-only file system
give one line naming the path and leave neither the mp4 nor its sidecar; a place that cannot take a video is refused
before any model work (core and CLI); a cancel during the VAE decode writes nothing and says so; SIGTERM stops a CLI
run at once without partial files. The app's side (SIGTERM, start-up cleanup, the Cancel reply) is in
test_reliability_round2_app.py."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from diffusers import AutoencoderKLWan, WanPipeline

from wan_ui.cli import main as cli_main
from wan_ui.core.errors import GenerationCancelled, OutputError, StorageError, UserError
from wan_ui.core.generate import generate
from wan_ui.core.options import OptimizationSet
from wan_ui.core.requests import GenerationRequest
from wan_ui.core.video import (
    EncoderError,
    check_output_folder,
    check_output_path,
    mp4_problem,
    read_metadata,
    read_video,
    remove_stale_files,
    write_video,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = GenerationRequest("a lighthouse in a storm", width=16, height=16, num_frames=5, num_inference_steps=2)
FRAMES = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
HEADER_48 = (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"  # what a killed ffmpeg leaves: ftyp,
             b"\x00\x00\x00\x08free\x00\x00\x00\x00mdat")  # free, and an mdat header whose size was never filled in


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def never_load(monkeypatch) -> None:
    """Any model load fails the test: what is refused "before any model work" must not get that far."""
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(WanPipeline, "from_pretrained", classmethod(load))


def assert_one_line(error: BaseException, *fragments: str) -> None:
    text = str(error)
    assert "\n" not in text and all(f in text for f in fragments), text


def mount_tmpfs(mount: Path, options: str) -> None:
    """A real small file system at `mount` (unmounted by the caller); the test is skipped where this process may
    not mount one."""
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "none", str(mount)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB disk that fills up."""
    mount_tmpfs(tmp_path / "disk", "size=256k")
    yield tmp_path / "disk"
    subprocess.run(["umount", str(tmp_path / "disk")], check=True)


def fill(disk: Path, leave_bytes: int = 0) -> None:
    """Fill `disk` until the file system refuses a block, then free `leave_bytes`."""
    fd = os.open(disk / "filler", os.O_CREAT | os.O_WRONLY)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave_bytes:
        size = (disk / "filler").stat().st_size
        os.truncate(disk / "filler", size - leave_bytes)


# ---- the encoder dies ---------------------------------------------------------------------------------------
def test_an_encoder_that_dies_after_the_frames_were_sent_is_an_error_and_leaves_nothing(manager, tmp_path,
                                                                                      monkeypatch):
    """A fake ffmpeg: the real one encodes, then the file is cut to the 48 bytes a killed ffmpeg leaves, exit 1.
    imageio-ffmpeg's close() reports nothing of it: before the fix this run said "Done" and kept the 48-byte
    mp4 and its sidecar."""
    fake = tmp_path / "ffmpeg"
    fake.write_text(f'#!/bin/sh\n"{imageio_ffmpeg.get_ffmpeg_exe()}" "$@" || exit $?\n'
                    'for last; do :; done\ntruncate -s 48 "$last"\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))
    out = tmp_path / "out"
    with pytest.raises(EncoderError) as e:
        generate(manager, "tiny", SMALL, OptimizationSet(), out_dir=out)
    assert_one_line(e.value, "video encoder (ffmpeg) failed", str(out), "cut short", "of 48 bytes")
    assert files(out) == []
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE")
    result = generate(manager, "tiny", SMALL, OptimizationSet(), out_dir=out)
    assert read_video(result.video_path)[0].shape == (5, 16, 16, 3) and len(files(out)) == 2


def test_a_writer_whose_close_raises_leaves_nothing(tmp_path, monkeypatch):
    def failing_writer(path, *args, **kwargs):
        Path(path).write_bytes(HEADER_48)
        try:
            while True:
                yield
        except GeneratorExit:
            raise RuntimeError("ffmpeg exited with status 1 (injected)") from None

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", failing_writer)
    with pytest.raises(EncoderError, match="RuntimeError: ffmpeg exited with status 1"):
        write_video(FRAMES, tmp_path / "v.mp4", 8, metadata={"tool": "wan_ui"})
    assert files(tmp_path) == []


def test_mp4_problem_tells_a_complete_file_from_a_cut_one(tmp_path):
    path = write_video(FRAMES, tmp_path / "v.mp4", 8)
    data = path.read_bytes()
    assert mp4_problem(path) is None
    cases = {"empty.mp4": b"", "header.mp4": HEADER_48, "cut.mp4": data[: len(data) - 100],
             "text.mp4": b"this is not a video at all"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert mp4_problem(tmp_path / name) is not None, name
    assert "no moov" in mp4_problem(tmp_path / "header.mp4") and "cut short" in mp4_problem(tmp_path / "cut.mp4")


# ---- the file system refuses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "No space left on device writing"),
                                        (errno.EROFS, "Read-only file system writing"),
                                        (errno.EACCES, "Permission denied writing")])
def test_a_refused_sidecar_write_is_one_line_and_takes_the_video_with_it(tmp_path, monkeypatch, code, says):
    """The sidecar is written after the video is complete; when the disk refuses it the video goes too."""
    def refuse(path, text):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("wan_ui.core.video.write_text_atomic", refuse)
    with pytest.raises(StorageError) as e:
        write_video(FRAMES, tmp_path / "v.mp4", 8, metadata={"tool": "wan_ui"})
    assert_one_line(e.value, says, str(tmp_path / "v.mp4"), "nothing was kept")
    assert e.value.errno == code and isinstance(e.value, OSError) and isinstance(e.value, UserError)
    assert files(tmp_path) == []


def test_a_disk_that_fills_up_during_the_write_is_one_line_and_leaves_nothing(manager, small_disk):
    """A real full disk: the folder passes the check (a block is free), ffmpeg then fails to write its index and
    exits; imageio-ffmpeg reports nothing, the completeness check and the second probe name the cause."""
    fill(small_disk, leave_bytes=4096)
    with pytest.raises(StorageError) as e:
        generate(manager, "tiny", GenerationRequest("x", width=64, height=64, num_frames=9, num_inference_steps=1),
                 OptimizationSet(), out_dir=small_disk / "videos")
    assert_one_line(e.value, "No space left on device writing", str(small_disk / "videos"))
    assert [p.name for p in files(small_disk)] == ["filler"]


def test_a_full_disk_is_refused_before_any_model_work(small_disk, monkeypatch, capsys):
    fill(small_disk)
    never_load(monkeypatch)
    assert cli_main(["generate", "--model", "tiny", "--prompt", "x", "--out", str(small_disk / "v.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: cannot write videos to {small_disk}: no space left on device (free some space or "
                       f"choose another folder)")
    assert [p.name for p in files(small_disk)] == ["filler"]


# ---- a place that cannot take a video ---------------------------------------------------------------------------
def bad_outs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """--out value -> (a fragment of the one-line error, what the case is)."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    (tmp_path / "folder.mp4").mkdir()
    return {"x.txt": ("must end in .mp4 (got '.txt')", "another suffix"),
            str(tmp_path / "clip"): ("must end in .mp4 (got no suffix)", "no suffix"),
            str(tmp_path / "folder.mp4"): ("is a folder", "an existing folder"),
            str(a_file / "x.mp4"): (f"{a_file} is a file, not a folder", "under a file"),
            str(a_file / "deeper" / "x.mp4"): (f"{a_file} is a file, not a folder", "deeper under a file"),
            "/proc/x.mp4": ("/proc is a kernel pseudo file system", "under /proc"),
            "/proc/self/x.mp4": ("/proc is a kernel pseudo file system", "deeper under /proc"),
            "/sys/x.mp4": ("/sys is a kernel pseudo file system", "under /sys"),
            str(tmp_path / ("n" * 240 + ".mp4")): ("too long for this file system", "its temporary name too long"),
            str(tmp_path / ("n" * 252 + ".mp4")): ("too long for this file system", "a name over NAME_MAX"),
            str(tmp_path / ("d" * 300) / "x.mp4"): ("File name too long", "a folder name over NAME_MAX")}


def test_bad_out_values_are_refused_by_the_core_before_any_model_work(manager, tmp_path, monkeypatch):
    never_load(monkeypatch)
    for out, (fragment, case) in bad_outs(tmp_path).items():
        with pytest.raises(OutputError) as e:
            generate(manager, "tiny", SMALL, OptimizationSet(), out_path=out)
        assert_one_line(e.value, fragment)
        assert e.value.field == "out", case
    assert manager.resident() == [] and manager.builds == 0


def test_bad_out_values_are_one_line_from_the_cli_before_any_model_work(tmp_path, monkeypatch, capsys):
    never_load(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for out, (fragment, case) in bad_outs(tmp_path).items():
        assert cli_main(["generate", "--model", "tiny", "--prompt", "x", "--out", out]) == 2, case
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err, case
        assert err.strip().splitlines()[-1].startswith("error: "), case
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.mp4", "notes.txt"]  # no sidecar, no video


def test_an_unwritable_outputs_folder_is_refused_before_any_model_work(manager, tmp_path, monkeypatch):
    """As root permission bits do not stop a write, so the OS's refusal is injected into the folder's probe."""
    never_load(monkeypatch)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("wan_ui.core.video.tempfile.mkstemp", refuse)
    with pytest.raises(StorageError) as e:
        generate(manager, "tiny", SMALL, OptimizationSet(), out_dir=tmp_path / "outputs")
    assert_one_line(e.value, f"cannot write videos to {tmp_path / 'outputs'}: permission denied")
    assert e.value.field == "outputs" and manager.builds == 0


def test_a_read_only_mount_is_refused_before_any_model_work(manager, tmp_path, monkeypatch):
    mount = tmp_path / "ro"
    mount_tmpfs(mount, "ro,size=64k")
    try:
        never_load(monkeypatch)
        with pytest.raises(StorageError) as e:
            generate(manager, "tiny", SMALL, OptimizationSet(), out_path=mount / "sub" / "v.mp4")
        assert_one_line(e.value, f"cannot write videos to {mount / 'sub'}: read-only file system")
        assert e.value.errno == errno.EROFS and manager.builds == 0
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_good_places_pass_and_are_not_created_by_the_check(tmp_path):
    assert check_output_path(tmp_path / "new" / "deeper" / "v.MP4") == tmp_path / "new" / "deeper" / "v.MP4"
    assert check_output_folder(tmp_path / "outputs") == tmp_path / "outputs"
    assert list(tmp_path.iterdir()) == []  # nothing created, the probe removed


# ---- cancel during the decode -------------------------------------------------------------------------------
def test_a_cancel_during_the_vae_decode_writes_nothing_and_says_so(manager, tmp_path, monkeypatch):
    cancel = threading.Event()
    real_decode = AutoencoderKLWan.decode

    def decode_while_the_user_clicks(self, *args, **kwargs):
        cancel.set()  # the click arrives while the VAE decodes (the denoising loop's last check has passed)
        return real_decode(self, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKLWan, "decode", decode_while_the_user_clicks)
    with pytest.raises(GenerationCancelled, match="cancelled during the VAE decode"):
        generate(manager, "tiny", SMALL, OptimizationSet(), out_dir=tmp_path, cancel=cancel)
    assert files(tmp_path) == []
    monkeypatch.undo()
    assert Path(generate(manager, "tiny", SMALL, OptimizationSet(), out_dir=tmp_path).video_path).is_file()


def test_the_sidecar_is_written_after_the_video_and_both_are_complete(tmp_path):
    path = write_video(FRAMES, tmp_path / "v.mp4", 8, metadata={"tool": "wan_ui", "n": 1})
    assert read_metadata(path) == {"tool": "wan_ui", "n": 1} and read_video(path)[0].shape == (5, 16, 16, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json", "v.mp4"]


# ---- leftovers of a killed writer ---------------------------------------------------------------------------
def test_remove_stale_files_takes_only_our_temporary_names(tmp_path):
    dead = 2 ** 22 + 12345  # above Linux's default pid_max (2^22): no process has it
    ours = [f".wan-1-seed3-ab.{dead}.partial.mp4", f".wan-1-seed3-ab.{dead}.tmp.json",
            f".wan-1-seed3-ab.{dead}.meta.mp4", f".wan-1.{os.getpid()}.partial.mp4", ".old.partial.mp4",
            ".old.meta.mp4", ".old.json.tmp", f".wan_ui-probe-{dead}-k2j4.tmp"]
    others = ["wan-1-seed3-ab.mp4", "wan-1-seed3-ab.json", "wan_ui.log", ".hidden-by-the-user", "clip.partial.mp4",
              ".notes.123.tmp.txt", f".wan-2.{os.getppid()}.partial.mp4"]  # the last: a live process writes it
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f".x.{dead}.partial.mp4").write_bytes(b"x")  # that folder only, not below
    removed, kept = remove_stale_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(ours)
    assert [p.name for p in kept] == [f".wan-2.{os.getppid()}.partial.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(others)


# ---- SIGTERM stops a CLI run --------------------------------------------------------------------------------
def test_sigterm_stops_a_cli_run_at_once_with_one_line_and_no_partial_file(tmp_path, tiny_folder):
    out = tmp_path / "videos" / "v.mp4"
    cmd = [sys.executable, "-m", "wan_ui", "generate", "--model", "tiny", "--prompt", "x", "--width", "256",
           "--height", "256", "--frames", "33", "--fps", "8", "--seed", "1", "--steps", "200", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = bytearray()

    def read_stderr():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            err.extend(chunk)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    deadline = time.time() + 240
    while b"denoising" not in err and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if b"denoising" not in err:
        proc.kill()
        pytest.fail(f"the CLI never reached denoising: {err.decode(errors='replace')}")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    took = time.monotonic() - sent
    reader.join(10)
    lines = [line for line in err.decode(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1] == "error: terminated by SIGTERM; the run was cancelled and nothing was written"
    assert "Traceback" not in err.decode(errors="replace")
    assert files(tmp_path / "videos") == [] and took < 30
