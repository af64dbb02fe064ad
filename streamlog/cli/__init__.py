"""The ``streamlog`` command: record streams, then query and maintain logs.

``main`` is the click group (console script ``streamlog`` and
``python -m streamlog``); the subcommands live in :mod:`.query` (sessions,
info, head, tail, range, export), :mod:`.admin` (prune, doctor,
upgrade, delete, backup, compact),
:mod:`.recording` (the ``record`` group and what its commands share),
:mod:`.record` (record lines/cmd/synth, demo, follow), :mod:`.audio`
(record audio, devices), :mod:`.mirror` (mirror), :mod:`.analysis`
(plot, record replay), :mod:`.mark` (mark) and :mod:`.cursors` (cursors).  Importing a module
registers its ``record`` subcommands.
"""

import click

from streamlog import __version__
from streamlog.cli.admin import backup, compact, delete, doctor, prune, upgrade
from streamlog.cli.analysis import plot
from streamlog.cli.audio import devices
from streamlog.cli.common import StreamlogGroup
from streamlog.cli.cursors import cursors
from streamlog.cli.mark import mark
from streamlog.cli.mirror import mirror
from streamlog.cli.query import export, head, info, range_, sessions, tail
from streamlog.cli.record import demo, follow
from streamlog.cli.recording import record

__all__ = ["main"]


@click.group(cls=StreamlogGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\nShell completion (put in ~/.bashrc; zsh_source and fish_source for other shells):\n"
                    "  eval \"$(_STREAMLOG_COMPLETE=bash_source streamlog)\"")
@click.version_option(__version__, "-V", "--version", prog_name="streamlog")
def main():
    """Record data streams into logs, then query, export and maintain them.

    A LOG is a directory made by recording (`streamlog record ...` or
    streamlog.StreamBuffer in Python).  Errors print one line and exit with
    status 1; bad usage exits with status 2.

    Example: streamlog sessions ./mylog
    """


for _command in (record, follow, demo, sessions, info, head, tail, range_, export, plot, prune, doctor, upgrade,
                 delete, backup, compact, devices, mirror, mark, cursors):
    main.add_command(_command)
