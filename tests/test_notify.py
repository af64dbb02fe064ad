"""The notification channel: followers in other processes sleep until a
writer commits; dead followers leave the channel; a planted link is refused."""

import os
import queue
import signal

import pytest

import streamlog
from streamlog import StreamBuffer, errors
from streamlog.notify import NOTIFY_DIR
from helpers import Gate, start_python
from helpers import wait_until as wait_for

DEADLINE_S = 120

FOLLOW = """
import sys, streamlog
session = streamlog.Log(sys.argv[1], readonly=True).session(-1)
reader = session.reader()
print("following", flush=True)
print(" ".join(str(record[0]) for record in reader), flush=True)
"""


def listeners(path):
    directory = os.path.join(path, NOTIFY_DIR)
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_a_follower_in_another_process_is_woken_by_each_commit_and_leaves_the_channel(tmp_path, processes):
    path = str(tmp_path / "rec.streamlog")
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=path) as buf:
        follower = start_python(FOLLOW, path)
        processes.append(follower)
        assert follower.stdout.readline() == "following\n", follower.stderr.read()
        wait_for(lambda: len(listeners(path)) == 1, what="the follower's listener")
        [name] = listeners(path)
        assert name.startswith(f"{follower.pid}-")
        for i in range(1, 201):  # one record per commit: the follower sleeps between them
            items.put((i, "x"))
            wait_for(lambda: buf.committed == i, what="a commit")
        items.put(StopIteration)
        buf.wait(DEADLINE_S)
        out, err = follower.communicate(timeout=DEADLINE_S)
    assert follower.returncode == 0, err
    assert out.split() == [str(i) for i in range(1, 201)]
    assert listeners(path) == []  # it removed its entry when it exited


def test_a_killed_follower_is_dropped_from_the_channel_by_the_next_commit(tmp_path):
    path = str(tmp_path / "rec.streamlog")
    items = queue.Queue()
    with StreamBuffer(Gate(items), log=path) as buf:
        follower = start_python(FOLLOW, path)
        assert follower.stdout.readline() == "following\n", follower.stderr.read()
        wait_for(lambda: len(listeners(path)) == 1, what="the follower's listener")
        follower.send_signal(signal.SIGKILL)
        assert follower.wait(DEADLINE_S) == -signal.SIGKILL
        assert len(listeners(path)) == 1  # a SIGKILLed process removes nothing
        items.put((1, "x"))
        wait_for(lambda: buf.committed == 1, what="a commit")
        assert listeners(path) == []  # the commit's wake-up met no socket and removed the entry
        items.put(StopIteration)
        buf.wait(DEADLINE_S)


def test_a_notify_directory_replaced_by_a_link_is_refused_and_its_target_untouched(tmp_path):
    path = tmp_path / "rec.streamlog"
    with StreamBuffer(Gate(queue.Queue()), log=str(path)):
        pass
    victim_dir = tmp_path / "precious"
    victim_dir.mkdir()
    (victim_dir / "123-0123456789ab").write_text("precious\n")  # named like a listener
    (path / NOTIFY_DIR).symlink_to(victim_dir)
    with pytest.raises(errors.NotALog, match=f"{path / NOTIFY_DIR} is a symbolic link"):
        streamlog.Log(path)
    assert (victim_dir / "123-0123456789ab").read_text() == "precious\n"
