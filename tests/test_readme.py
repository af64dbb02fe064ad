"""Every code block of README.md runs as written.

The blocks run in README order, in one fresh directory (later blocks use
what earlier ones made, as a reader following the README would), each in a
subprocess whose ``python`` and ``streamlog`` are this worktree's:

* a ``python`` block runs as a script;
* a shell transcript (``text``, ``console``, ``sh`` or ``bash`` with lines
  starting ``$ ``): each ``$ `` command runs in ``bash -o pipefail`` and must
  exit 0; the other lines are its output as shown, not checked;
* an ``sh``/``bash`` block without ``$ `` lines is a list of commands, one
  a line, each run the same way.  Commands joined by ``&&`` run one by one,
  except the set-up commands listed in :data:`SETUP_COMMANDS` (installing
  the package, running this test suite), which are skipped; the test fails
  if one of them is no longer in the README, so the list stays exact.

Audio: every subprocess sees PortAudio's default input device as the ALSA
file device of ``tests/conftest.py`` (``alsa_file_input``), playing a test
tone, so the audio example records real buffers through PyAudio.

A block that cannot run as written (pseudo-code, a sketch of output, a
configuration file) must say so on the line before its opening fence::

    <!-- readme-test: not run: <why> -->

The reason is required, a ``python`` block so marked must still compile,
and a block of any other language, or a transcript without commands,
fails this test unless it is marked.
"""

import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO

README = os.path.join(REPO, "README.md")

SETUP_COMMANDS = {
    "pip install .",
    "apt-get update",
    "apt-get install -y portaudio19-dev redis-server",
    "pip install -e '.[test,bench]'",
    "python -m pytest -q",
}
"""Commands of the README's set-up blocks that this test does not run: they
install streamlog (already installed here) or run this very suite."""

SHELL_LANGUAGES = {"sh", "bash", "console", "text"}
NOT_RUN = re.compile(r"<!--\s*readme-test:\s*not run:\s*(?P<reason>.*?)\s*-->")
FENCE = re.compile(r"^```(?P<language>\S*)\s*$")
BLOCK_TIMEOUT_S = 120


class Block:
    def __init__(self, line, language, text, not_run):
        self.line, self.language, self.text, self.not_run = line, language, text, not_run

    def __repr__(self):
        return f"README.md:{self.line} ({self.language or 'no language'})"

    def commands(self):
        """The shell commands of the block, ``&&`` chains split, set-up commands left out."""
        lines = self.text.splitlines()
        prompted = [line[2:] for line in lines if line.startswith("$ ")]
        if not prompted and self.language in ("sh", "bash"):
            prompted = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        commands = []
        for line in prompted:
            commands += [part.strip() for part in line.split(" && ") if part.strip() not in SETUP_COMMANDS]
        return commands

    def setup_commands(self):
        return {part.strip() for line in self.text.splitlines() for part in line.lstrip("$ ").split(" && ")
                if part.strip() in SETUP_COMMANDS}


def readme_blocks(text):
    """The fenced code blocks of ``text``, in order."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"README.md:{start + 1}: a code block is never closed")
        marker = NOT_RUN.search(lines[start - 1]) if start > 0 else None
        blocks.append(Block(start + 1, fence.group("language"), "\n".join(body) + "\n",
                            None if marker is None else marker.group("reason")))
        i += 1
    return blocks


def check_runnable(block):
    """AssertionError unless ``block`` runs, or is marked with a reason (and, for python, compiles)."""
    if block.not_run is not None:
        assert block.not_run, f"{block}: the not-run marker needs a reason"
        if block.language == "python":
            compile(block.text, repr(block), "exec")
        return
    if block.language == "python":
        return
    assert block.language in SHELL_LANGUAGES, (
        f"{block}: a {block.language or 'plain'} block is not run; make it python or a shell transcript, "
        f"or mark it <!-- readme-test: not run: <why> -->")
    assert block.commands() or block.setup_commands(), (
        f"{block}: a transcript without '$ ' commands; add them or mark the block as not run")


@pytest.fixture
def tool_dir(tmp_path):
    """A directory to put first on PATH: ``python`` and ``streamlog`` of this worktree."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("python", f'exec "{sys.executable}" "$@"'),
                          ("streamlog", f'exec "{sys.executable}" -m streamlog "$@"')):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{command}\n")
        script.chmod(0o755)
    return bin_dir


def run_block(block, workdir, env):
    """Run ``block``'s code; AssertionError with its output unless every run exits 0.  A run
    still going after BLOCK_TIMEOUT_S gets SIGABRT, so Python's faulthandler prints where it was."""
    env = dict(env, PYTHONFAULTHANDLER="1")
    if block.language == "python":
        runs = [("the block", [sys.executable, "-c", block.text])]
    else:
        runs = [(command, ["bash", "-o", "pipefail", "-c", command]) for command in block.commands()]
    for what, argv in runs:
        process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        try:
            stdout, stderr = process.communicate(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            stdout, stderr = process.communicate(timeout=30)
            stderr = f"(still running after {BLOCK_TIMEOUT_S} s: aborted)\n{stderr}"
        assert process.returncode == 0, (f"{block}: {what} exited {process.returncode}\n{stdout[-2000:]}\n"
                                         f"{stderr[-6000:]}")


def test_the_block_rules_catch_a_block_that_cannot_run():
    blocks = readme_blocks("```yaml\na: 1\n```\n<!-- readme-test: not run: a sketch -->\n```python\nx = (\n```\n"
                           "```text\njust output\n```\n<!-- readme-test: not run: -->\n```text\nx\n```\n")
    with pytest.raises(AssertionError, match="a yaml block is not run"):
        check_runnable(blocks[0])
    with pytest.raises(SyntaxError):
        check_runnable(blocks[1])
    with pytest.raises(AssertionError, match="without '\\$ ' commands"):
        check_runnable(blocks[2])
    with pytest.raises(AssertionError, match="needs a reason"):
        check_runnable(blocks[3])
    assert Block(1, "sh", "pip install . && streamlog demo\n", None).commands() == ["streamlog demo"]


def test_every_readme_block_runs_as_written(alsa_file_input, tool_dir, tmp_path):
    with open(README, encoding="utf-8") as f:
        blocks = readme_blocks(f.read())
    for block in blocks:
        check_runnable(block)
    seen_setup = set().union(*(block.setup_commands() for block in blocks))
    assert seen_setup == SETUP_COMMANDS, f"not in the README any more: {SETUP_COMMANDS - seen_setup}"

    tone = (np.sin(np.arange(4 * 44100) * 2 * np.pi * 440 / 44100) * 8000).astype(np.int16)[:, None]
    alsa_file_input(tone)  # 4 s of a 440 Hz mono tone from the default input device
    workdir = tmp_path / "reader"
    workdir.mkdir()
    env = dict(os.environ, PATH=f"{tool_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ran = 0
    for block in blocks:
        if block.not_run is None:
            run_block(block, workdir, env)
            ran += 1
    assert ran >= 8  # the README's blocks as of this test; more are welcome
