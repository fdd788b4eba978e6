"""Run notebooks headless and show where they are: what `make course` runs.

    python -m helpers.tools.run_notebooks [--out runs/course] [--timeout S] [--heartbeat S] NOTEBOOK...

Built on nbclient, the executor inside nbconvert (installed with it, kept by the Jupyter project), through
its cell hooks (`on_cell_execute`, `on_cell_executed`) and its output handler. Not papermill: it is not in
the pinned environment, it runs nbclient underneath, and its parameters arrive by a cell it injects into
each notebook. The course's one parameter, the budget, reaches every notebook through the environment
instead (COURSE_BUDGET, read by `helpers.config.budget()`), so a notebook stays as a learner opens it.

The terminal gets plain lines (a log file reads the same as the screen):

    == notebooks/06_evaluation.ipynb: 20 code cells, budget 'cpu'
    [######--------------]  6/20 code cells  0m12s  cell 12: ranks = runs.evaluate_all(feats, budget=BUDGET)
       | all runs trained and ranked in 1386 s        <- the cell's own printed output, as it comes
       ... cell 12 still running: 1m30s               <- every --heartbeat seconds while a cell runs
    == done in 1400 s: runs/course/06_evaluation.ipynb

When a cell fails (an error, the per-cell time limit, a dead kernel, Ctrl-C) the partly executed notebook is
written to --out with the error in the failing cell, the terminal names the notebook, the cell and that file,
and the exit status is 1; the notebooks after it are not run.
"""
from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from ..atomic import atomic_path
from ..config import budget

# The per-cell limit when none is given; `make course` and `make test` pass the Makefile's CELL_TIMEOUT.
CELL_TIMEOUT = 3600
HEARTBEAT = 30          # seconds between "still running" lines
BAR_WIDTH = 20
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")   # IPython colours its tracebacks


def plain(text: str) -> str:
    """`text` without ANSI colour codes."""
    return ANSI.sub("", text)


def clock(seconds: float) -> str:
    """75.2 -> '1m15s'."""
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def latest(line: str) -> str:
    """What a terminal shows of a line redrawn with '\\r' (tqdm): its last non-empty state."""
    return next((part.rstrip() for part in reversed(line.split("\r")) if part.strip()), "")


def first_line(source: str, width: int = 90) -> str:
    """A cell's first line of code (comments skipped), cut to `width`."""
    lines = [l for l in source.splitlines() if l.strip()]
    line = next((l for l in lines if not l.lstrip().startswith("#")), lines[0] if lines else "")
    return line if len(line) <= width else line[: width - 3] + "..."


def bar(done: int, total: int) -> str:
    """(6, 20) -> '[######--------------]  6/20 code cells'."""
    filled = BAR_WIDTH * done // max(total, 1)
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done:2d}/{total} code cells"


class Terminal:
    """Prints the progress lines (one lock, so the heartbeat thread never splits a line)."""

    def __init__(self, heartbeat: float, stream=None):
        self.heartbeat, self.stream = heartbeat, stream or sys.stdout
        self.lock = threading.Lock()
        self.cell: int | None = None            # the running cell's number (1-based), None between cells
        self.last: int | None = None            # the cell that ran last (the failing one, after an error)
        self.cell_start = 0.0
        self.partial: dict[str, str] = {}       # per stream: a redrawn line (tqdm's "\r") not yet ended

    def say(self, line: str) -> None:
        with self.lock:
            print(line, file=self.stream, flush=True)

    def relay(self, name: str, text: str) -> None:
        """A cell's printed output (stream `name`), line by line; of a bar redrawn with '\\r', its state
        when the line ends (the states between are shown by the heartbeat)."""
        *lines, self.partial[name] = (self.partial.get(name, "") + plain(text)).split("\n")
        for line in lines:
            shown = latest(line)
            if shown:
                self.say(f"   | {shown}")

    def flush_partial(self) -> None:
        for name in sorted(self.partial):
            shown = latest(self.partial[name])
            if shown:
                self.say(f"   | {shown}")
        self.partial = {}

    def beat(self, stop: threading.Event) -> None:
        """Every `heartbeat` seconds of a running cell, a line with its time so far and its latest bar."""
        seen, beats = None, 0
        while not stop.wait(min(1.0, self.heartbeat)):
            cell, start = self.cell, self.cell_start
            if (cell, start) != seen:
                seen, beats = (cell, start), 0
            elapsed = time.monotonic() - start
            if cell is not None and elapsed >= (beats + 1) * self.heartbeat:
                beats = int(elapsed // self.heartbeat)
                bars = [latest(text) for text in list(self.partial.values()) if latest(text)]
                self.say(f"   ... cell {cell} still running: {clock(elapsed)}" + "".join(f"  ({b})" for b in bars))


class CourseClient(NotebookClient):
    """nbclient's executor, relaying each cell's stream output to the terminal as it arrives."""

    terminal: Terminal | None = None

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] == "stream" and self.terminal is not None:
            self.terminal.relay(msg["content"].get("name", "stdout"), msg["content"].get("text", ""))
        return super().output(outs, msg, display_id, cell_index)


def stopped_output(reason: str) -> nbformat.NotebookNode:
    """An error output for a cell the runner stopped (time limit, dead kernel, Ctrl-C)."""
    return nbformat.v4.new_output("error", ename="CellStopped", evalue=reason, traceback=[f"CellStopped: {reason}"])


def run_notebook(path: Path, out_dir: Path, timeout: int, terminal: Terminal) -> tuple[bool, Path]:
    """Execute `path` in a fresh kernel (in its own folder, as Jupyter does) and write it to out_dir/<name>,
    finished or up to the failing cell -> (succeeded, written path)."""
    nb = nbformat.read(path, as_version=4)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    out = out_dir / path.name
    started = time.monotonic()
    terminal.say(f"== {path}: {len(code)} code cells, budget {budget()!r}")

    def on_cell_execute(cell, cell_index):
        terminal.cell_start = time.monotonic()
        terminal.cell = terminal.last = cell_index + 1
        terminal.say(f"{bar(code.index(cell_index), len(code))}  {clock(time.monotonic() - started)}  "
                     f"cell {cell_index + 1}: {first_line(cell.source)}")

    def on_cell_executed(cell, cell_index, execute_reply):
        terminal.flush_partial()
        terminal.cell = None

    client = CourseClient(nb, timeout=timeout, kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
                          resources={"metadata": {"path": str(path.parent.resolve())}},
                          extra_arguments=["--IPKernelApp.log_level=ERROR"],   # not ipykernel's TCP warning
                          on_cell_execute=on_cell_execute, on_cell_executed=on_cell_executed)
    client.terminal = terminal
    failure, terminal.last = None, None
    try:
        client.execute()
    except CellExecutionError as e:
        failure = e
    except (CellTimeoutError, DeadKernelError, KeyboardInterrupt) as e:
        failure = e
        reason = {CellTimeoutError: f"stopped after the per-cell limit of {timeout} s (--timeout; the "
                                    "Makefile's CELL_TIMEOUT)",
                  DeadKernelError: "the kernel died (out of memory?) while this cell ran",
                  KeyboardInterrupt: "interrupted (Ctrl-C)"}[type(e)]
        if terminal.last is not None:
            nb.cells[terminal.last - 1].outputs.append(stopped_output(reason))
    terminal.flush_partial()
    terminal.cell = None
    with atomic_path(out) as tmp:
        nbformat.write(nb, tmp)
    if failure is None:
        terminal.say(f"{bar(len(code), len(code))}  {clock(time.monotonic() - started)}")
        terminal.say(f"== done in {time.monotonic() - started:.0f} s: {out}")
        return True, out
    report_failure(path, nb, terminal.last, out, failure, terminal)
    return False, out


def report_failure(path: Path, nb, cell_number: int | None, out: Path, failure: BaseException,
                   terminal: Terminal) -> None:
    """Say, in plain text, which notebook and cell failed, why, and where the partly executed notebook is."""
    terminal.say("")
    if cell_number is None:
        terminal.say(f"FAILED: {path}, before its first cell ran: {plain(str(failure)).strip()}")
    else:
        cell = nb.cells[cell_number - 1]
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        terminal.say(f"FAILED: {path}, cell {cell_number} (In [{cell.get('execution_count') or ' '}]): "
                     f"{first_line(cell.source)}")
        if errors:
            terminal.say("\n".join(plain(line) for line in errors[-1].traceback))
            terminal.say(f"error: {errors[-1].ename}: {plain(errors[-1].evalue)}")
    terminal.say(f"The partly executed notebook, with the error in that cell: {out}")
    terminal.say(f"Open it with `jupyter lab {out}`; fix the cause, then run `make course` again.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.run_notebooks", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/course"), help="where executed notebooks go")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds a cell may run")
    parser.add_argument("--heartbeat", type=float, default=HEARTBEAT, help="seconds between 'still running' lines")
    args = parser.parse_args(argv)
    try:
        budget()                          # a bad COURSE_BUDGET fails now, not in notebook 05
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    terminal = Terminal(args.heartbeat)
    stop = threading.Event()
    threading.Thread(target=terminal.beat, args=(stop,), daemon=True).start()
    try:
        for path in args.notebooks:
            ok, _ = run_notebook(path, args.out, args.timeout, terminal)
            if not ok:
                return 1
    finally:
        stop.set()
    terminal.say(f"== all {len(args.notebooks)} notebooks ran; executed copies in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
