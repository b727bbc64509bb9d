"""One writer per folder (`vseg_keras.folder_lock`): live holders refuse, gone ones are taken over.

(Two real `vseg train` processes on one run dir: test_train_evaluate's killed-training test.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli import main
from vseg_keras.folder_lock import LOCK_NAME, FolderLockedError, _process_start, folder_lock


def write_lock(folder, **holder) -> None:
    folder.mkdir(exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "since": "then", **holder}))


@pytest.fixture
def live_process():
    """Another live process on this host."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_a_live_holder_is_refused_naming_it(tmp_path, live_process):
    write_lock(tmp_path / "run", pid=live_process.pid, process_start=_process_start(live_process.pid))
    before = (tmp_path / "run" / LOCK_NAME).read_text()
    holder = rf"\(host {socket.gethostname()}, pid {live_process.pid}, since then\)"
    message = rf"^{tmp_path / 'run'} is being written by another vseg train {holder}"
    with pytest.raises(FolderLockedError, match=message):
        with folder_lock(str(tmp_path / "run"), "vseg train"):
            pass
    assert (tmp_path / "run" / LOCK_NAME).read_text() == before  # untouched


def test_a_gone_holder_is_taken_over_with_a_note_and_the_lock_released(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    reused = {"pid": os.getpid(), "process_start": "0"}  # our pid, but another process's start: the id was reused
    for holder in ({"pid": dead_pid}, reused):
        write_lock(tmp_path / "run", **holder)
        notes = []
        with folder_lock(str(tmp_path / "run"), "vseg train", notes.append):
            held = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
            assert (held["pid"], held["host"]) == (os.getpid(), socket.gethostname())
        assert notes == [f"note: {tmp_path / 'run'}: taking over the lock of a vseg train that is gone "
                         f"(host {socket.gethostname()}, pid {holder['pid']}, since then)"]
        assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_holder_on_another_host_is_refused_with_how_to_clear_it(tmp_path):
    write_lock(tmp_path / "run", host="elsewhere.example", pid=1)
    lock = tmp_path / "run" / LOCK_NAME
    with pytest.raises(FolderLockedError, match=f"on another machine .*; if that run is gone, delete {lock} and run"):
        with folder_lock(str(tmp_path / "run"), "vseg train"):
            pass


def test_the_lock_is_released_on_an_error(tmp_path):
    with pytest.raises(RuntimeError):
        with folder_lock(str(tmp_path / "run"), "vseg train"):
            raise RuntimeError("the work failed")
    assert os.listdir(tmp_path / "run") == []


def test_vseg_convert_refuses_an_out_dir_another_convert_writes(tmp_path, live_process):
    synth = CliRunner().invoke(main, ["synth", str(tmp_path / "src"), "--train-sequences", "1", "--val-sequences",
                                      "1", "--test-sequences", "0", "--height", "32", "--width", "64"])
    assert synth.exit_code == 0, synth.output
    write_lock(tmp_path / "out", pid=live_process.pid, process_start=_process_start(live_process.pid))
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "src"), str(tmp_path / "out"), "--keep-size"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'out'} is being written by another vseg convert (host {socket.gethostname()}, "
        f"pid {live_process.pid}, since then); wait for it or stop it first"]
    assert os.listdir(tmp_path / "out") == [LOCK_NAME]  # nothing written
    live_process.kill()
    live_process.wait()
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "src"), str(tmp_path / "out"), "--keep-size"])
    assert result.exit_code == 0, result.output
    assert "taking over the lock of a vseg convert that is gone" in result.output
    assert (tmp_path / "out" / "manifest.json").exists() and not (tmp_path / "out" / LOCK_NAME).exists()
