"""Maintenance commands: ``prune`` (apply retention now), ``doctor`` (health
report), ``upgrade`` (rewrite an old log in the current format),
``delete`` (one session), ``backup`` (a consistent copy) and ``compact``
(give freed pages back); the work is in :mod:`streamlog.maintenance`
and :class:`streamlog.Log`."""

import dataclasses
import json
import os
import signal
import sys
import tempfile
import time

import click

from streamlog import errors
from streamlog.log import Retention
from streamlog.cli.common import AGE, SIZE, TIME, format_bytes, log_argument, open_log, utc_option
from streamlog.maintenance import backup as backup_log
from streamlog.maintenance import compact as compact_log
from streamlog.maintenance import prune_plan

__all__ = ["prune", "doctor", "upgrade", "delete", "backup", "compact"]


# --------------------------------------------------------------------------
# prune


_LIMITS = (("max_bytes", "--max-bytes"), ("max_age_s", "--max-age"), ("max_sessions", "--keep-sessions"))


@click.command()
@log_argument
@click.option("--max-bytes", type=SIZE, metavar="SIZE",
              help="Keep the log's data within about this size (e.g. 500MB, 2GiB; at least 1MiB); "
                   "the oldest records go first.")
@click.option("--max-age", type=AGE, metavar="AGE",
              help="Remove records that arrived longer ago than AGE: 7d, 12h, 90m, 1h30m or seconds.")
@click.option("--until", type=TIME, metavar="TIME",
              help="Remove records that arrived before TIME (-7d, epoch seconds, ISO-8601).")
@click.option("--keep-sessions", type=click.IntRange(min=1), metavar="N",
              help="Keep only the newest N sessions (a live session is never removed whole).")
@click.option("--keep-unacked", is_flag=True,
              help="--max-age, --until and --keep-sessions keep the records a named cursor has not "
                   "acknowledged (see `streamlog cursors`); --max-bytes removes them all the same.")
@click.option("--dry-run", "-n", is_flag=True,
              help="Print what would be removed and change nothing (prunes a temporary copy of the log, "
                   "so it needs room for one in $TMPDIR).")
@utc_option
def prune(log, max_bytes, max_age, until, keep_sessions, keep_unacked, dry_run, utc):
    """Remove old records from LOG now, within the given limits.

    Give at least one limit.  Works while other processes record: a live
    session keeps its newest record of each stream and is never removed
    whole.  The file keeps its size (LMDB reuses the freed pages);
    `streamlog compact` gives them back to the file system.

    \b
    Examples:
      streamlog prune ./mylog --max-bytes 1GiB --keep-sessions 10
      streamlog prune ./mylog --max-age 7d --dry-run
    """
    if until is not None:
        if until >= time.time():
            raise click.BadParameter("is not in the past: that would remove every record", param_hint="'--until'")
        age = time.time() - until
        max_age = age if max_age is None else min(max_age, age)
    retention = _retention_from_options(max_bytes=max_bytes, max_age_s=max_age, max_sessions=keep_sessions)
    retention = dataclasses.replace(retention, keep_unacked=keep_unacked)
    if dry_run:
        _print_plan(log, prune_plan(log, retention))
        return
    with open_log(log, readonly=False) as opened:
        before = {s.id: s.count for s in opened.sessions()}
        removed = opened.prune(retention)
        after = {s.id: s.count for s in opened.sessions()}
        stats = opened.stats()
    if not removed and before == after:
        click.echo(f"Nothing to remove: {log} is within the limits.")
    else:
        click.echo(f"Removed {removed} record(s) from {log}.")
        gone = [sid for sid in before if sid not in after]
        if gone:
            click.echo(f"  sessions removed: {', '.join(map(str, gone))}")
        for sid, count in after.items():
            if before.get(sid, count) != count:
                click.echo(f"  session {sid}: {before[sid]} -> {count} records")
    click.echo(f"Now {stats['sessions']} session(s), {stats['records']} record(s), "
               f"{format_bytes(stats['bytes_used'])} used of {format_bytes(stats['bytes_on_disk'])} on disk.")


def _print_plan(log, plan):
    """The --dry-run report of :func:`streamlog.maintenance.prune_plan`."""
    if not plan["sessions"]:
        click.echo(f"Nothing would be removed: {log} is within the limits.")
        return
    bound = "at most " if plan["live"] else ""
    click.echo(f"Would remove {bound}{plan['removed']} record(s) from {log} (dry run: nothing was changed).")
    for sid, (before, after) in plan["sessions"].items():
        if sid in plan["live"]:
            click.echo(f"  session {sid} (being recorded): at most {before - after} of {before} records (the "
                       f"newest block of each stream stays)")
        elif after == 0:
            click.echo(f"  session {sid}: all {before} records (the whole session)")
        else:
            click.echo(f"  session {sid}: {before} -> {after} records")


def _retention_from_options(**limits):
    """A Retention of the given limits; usage errors for none or a bad one."""
    given = {name: value for name, value in limits.items() if value is not None}
    if not given:
        raise click.UsageError("give at least one limit: --max-bytes, --max-age, --until or --keep-sessions")
    for name, option in _LIMITS:
        if name in given:
            try:
                Retention(**{name: given[name]})
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=f"'{option}'") from exc
    return Retention(**given)


# --------------------------------------------------------------------------
# upgrade


@click.command()
@log_argument
def upgrade(log):
    """Rewrite LOG, made by an older streamlog, in the current on-disk format.

    Logs of format version 1 can be read as they are but not recorded into;
    this rewrites one as version 2, with a progress bar.  It is atomic: the
    new log is built inside LOG and replaces the old data file in one
    rename, so an interrupted upgrade leaves the old log as it was.  The log
    must be idle (no process recording or reading it).

    Example: streamlog upgrade ./mylog
    """
    from streamlog.records import FORMAT_VERSION
    from streamlog.upgrade import upgrade as rewrite

    with open_log(log) as opened:
        total = sum(counters["count"] for meta in opened.catalog.all() for counters in meta["streams"].values())
        version = opened.format_version
    if version == FORMAT_VERSION:
        click.echo(f"{log} is already format version {FORMAT_VERSION}; nothing to do.")
        return
    with click.progressbar(length=total, label=f"upgrading {log}", file=sys.stderr, show_pos=True) as bar:
        count = rewrite(log, progress=bar.update)
    click.echo(f"Rewrote {count} record(s) of {log} from format version {version} to {FORMAT_VERSION}.")


# --------------------------------------------------------------------------
# doctor


@click.command()
@log_argument
@click.option("--strict", is_flag=True,
              help="Count crashed sessions as problems too (exit status 1), as doctor used to.")
@click.pass_context
def doctor(ctx, log, strict):
    """Check LOG and report its health.

    Reads every record key to check key order, sequence numbers and
    counters.  Frees the reader slots of processes killed while reading
    (they keep the log from reusing space) and names those processes.
    Problems that need action (damage) are listed apart from history: a
    session that crashed or failed long ago is reported, not failed on.
    Exits 0 when there is nothing to act on, 1 when a problem was found
    (with --strict, a crashed session is one).  The checks run in a child
    process, so a damaged file that crashes LMDB is reported, not fatal.

    \b
    Examples:
      streamlog doctor ./mylog
      streamlog doctor ./mylog --strict || alert "the recorder of ./mylog crashed"
    """
    stats, sessions, problems = _in_child(_findings, log)
    statuses = [s["status"] for s in sessions]
    by_status = ", ".join(f"{statuses.count(status)} {status}"
                          for status in ("live", "closed", "failed", "crashed") if status in statuses)
    writers = stats["writer_pids"]
    rows = [
        ("log", stats["path"]),
        ("format", f"version {stats['format_version']}"),
        ("sessions", f"{stats['sessions']}" + (f" ({by_status})" if by_status else "")),
        ("records", str(stats["records"])),
        ("on disk", f"{format_bytes(stats['bytes_on_disk'])} "
                    f"({format_bytes(stats['bytes_used'])} used, {stats['free_pages']} free pages "
                    f"of {format_bytes(stats['page_size'])})"),
        ("map size", format_bytes(stats["map_size"])),
        ("readers", _describe_readers(stats)),
        ("writers", f"{', '.join(f'pid {pid}' for pid in writers)} recording" if writers else "none"),
    ]
    for label, value in rows:
        click.echo(f"{label:<9} {value}")
    crashed = [s["crash_note"] for s in sessions if s["status"] == "crashed"]
    failed = [f"session {s['id']} failed: {s['error'] or 'no error recorded'}"
              for s in sessions if s["status"] == "failed"]
    history = failed + ([] if strict else crashed)
    if history:
        click.echo(f"history ({len(history)}, nothing to do):")
        for line in history:
            click.echo(f"  - {line}")
    if strict:
        problems = problems + crashed
    if problems:
        click.echo(f"{len(problems)} problem(s):")
        for problem in problems:
            click.echo(f"  - {problem}")
        ctx.exit(1)
    click.echo("healthy: no problems found")


def _findings(log):
    """What doctor reports: the log's stats, its sessions (id, status, pid,
    error, crash note) and its problems (crashed sessions not counted)."""
    with open_log(log) as opened:
        opened.clear_stale_readers()
        sessions = [{"id": s.id, "status": s.status, "pid": s.pid, "error": s.error, "crash_note": s.crash_note()}
                    for s in opened.sessions()]
        return opened.stats(), sessions, opened.verify(crashed=False)


def _in_child(work, log):
    """``work(log)`` run in a forked child process; its JSON-able result.

    LMDB does not checksum pages, so a damaged file can crash the process
    reading it (SIGSEGV, SIGBUS, an abort); here that ends the child, and
    this raises a ClickException saying the log is damaged (with what the
    child wrote to stderr, such as LMDB's failed assertion).  A
    StreamlogError in the child is raised here with its message.  Blocks
    until the child ends.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child_stderr = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return
        status = 1
        try:
            os.close(read_end)
            os.dup2(child_stderr.fileno(), 2)
            try:
                reply = {"result": work(log)}
            except errors.StreamlogError as exc:
                reply = {"error": str(exc)}
            except Exception as exc:
                reply = {"error": f"unexpected {type(exc).__name__}: {exc} (a bug in streamlog)"}
            with os.fdopen(write_end, "w") as pipe:
                json.dump(reply, pipe)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    with child_stderr:
        child_stderr.seek(0)
        said = " ".join(child_stderr.read(1000).decode(errors="replace").split())
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise click.ClickException(f"reading log {log} crashed ({name}{': ' + said if said else ''}): "
                                   f"the file is damaged")
    if not text:
        raise click.ClickException(f"checking log {log} failed in the child process (exit status "
                                   f"{os.waitstatus_to_exitcode(status)})")
    reply = json.loads(text)
    if "error" in reply:
        raise click.ClickException(reply["error"])
    return reply["result"]


def _describe_readers(stats):
    """The readers line: slots held now, and the stale slots this process freed."""
    held = (f"{stats['reader_slots']} of {stats['max_readers']} slots held by "
            f"{stats['reader_processes']} process(es), {stats['reading']} reading now")
    cleared = stats["stale_readers_cleared"]
    if not cleared:
        return f"{held}; no stale slots"
    pids = stats["stale_reader_pids"]
    dead = f" of dead process(es) {', '.join(map(str, pids))}" if pids else ""
    return f"{held}; cleared {cleared} stale slot(s){dead}"


# --------------------------------------------------------------------------
# delete, backup, compact


@click.command()
@log_argument
@click.option("--session", "-s", "session_id", type=int, required=True, metavar="ID",
              help="The session to delete; negative counts from the end.")
def delete(log, session_id):
    """Delete one session of LOG with all its records.

    A live session (being recorded) is refused.  Session ids are never
    reused.

    \b
    Example:
      streamlog delete ./mylog -s 3
    """
    with open_log(log, readonly=False) as opened:
        session_id = opened.session(session_id).id
        removed = opened.delete_session(session_id)
    click.echo(f"Deleted session {session_id} ({removed} record(s)) from {log}.")


@click.command()
@log_argument
@click.argument("dest", type=click.Path(path_type=str))
@click.option("--compact", "compacted", is_flag=True, help="Leave out free pages: the copy is as small as the data.")
def backup(log, dest, compacted):
    """Copy LOG to the new directory DEST: a consistent copy, also while the
    log is being recorded (LMDB's own copy of one snapshot; the recorder
    does not stop).  The copy is opened and verified before this returns.

    A session that was live at that moment shows as crashed in the copy,
    with every record committed before.  DEST must not exist (or be an
    empty directory).  Exit status 1 when the copy does not verify.

    \b
    Examples:
      streamlog backup ./mylog /backups/mylog-$(date +%F)
      streamlog backup ./mylog ./small-copy --compact
    """
    done = backup_log(log, dest, compact=compacted)
    click.echo(f"Copied {log} to {done['path']}: {done['sessions']} session(s), {done['records']} record(s), "
               f"{format_bytes(done['bytes'])}{' (compacted)' if compacted else ''}.")
    if done["problems"]:
        click.echo(f"the copy does not verify ({len(done['problems'])} problem(s)):", err=True)
        for problem in done["problems"]:
            click.echo(f"  - {problem}", err=True)
        raise click.exceptions.Exit(1)


@click.command()
@log_argument
def compact(log):
    """Give the pages that pruning freed back to the file system.

    LMDB reuses freed pages but never shrinks its file; this rewrites LOG
    by copy-and-swap (a compacted copy beside it, renamed over data.mdb).
    Refused while another process records into LOG or has it open
    (stop them first, or make a compacted copy with `backup --compact`).

    \b
    Example:
      streamlog prune ./mylog --max-bytes 5MiB && streamlog compact ./mylog
    """
    before, after = compact_log(log)
    click.echo(f"Compacted {log}: {format_bytes(before)} -> {format_bytes(after)} "
               f"({format_bytes(max(0, before - after))} given back).")
