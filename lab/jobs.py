"""Work that goes on in the background: training, labeling, evaluation, model loading.

A :class:`Job` is what a page (or the CLI) reads while the work goes on: a state from
:class:`JobState`, progress (done / total, a fraction, the rate and the time left), a
stop request the work checks (``stop_event``), a message (a :class:`~lab.text.Msg`), a
bounded log tail, and when it started and ended. :func:`start_job` runs ``work(job)`` in a
daemon thread; :meth:`Job.run` is the one place where the end of the work becomes the job's
outcome: a :class:`LabError` keeps its own sentence, anything else becomes "<what> failed:
<the error's first line>", with the traceback in the server log.

States move one way::

    queued ──> starting ──> (loading) ──> running ──> finished
                  │             │            └──> stopping ──> stopped
                  └─────────────┴──────────────────────────> failed

A queued job that is stopped leaves the queue as ``stopped``; :class:`JobQueue` holds the
line of jobs that take turns (training on a shared deployment).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Any

from lab.errors import LabError
from lab.text import Msg, msg_of

logger = logging.getLogger(__name__)

LOG_LINES = 200  # the log tail a job keeps; the whole log goes to the server log or a file


class JobState(str, Enum):
    """Where a job stands; each state's word, as pages and the CLI show it, is ``.label``."""

    NEW = "new"  # a run folder with nothing logged yet (read from disk, never a live job's state)
    QUEUED = "queued"
    STARTING = "starting"
    LOADING = "loading"  # loading the model the work needs
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @property
    def label(self) -> Msg:
        """The state's word: a message whose English is the value (its Chinese is in the catalog)."""
        return STATE_NAMES[self]

    @property
    def active(self) -> bool:
        """Queued or going on (not ended)."""
        return self in (JobState.QUEUED, JobState.STARTING, JobState.LOADING, JobState.RUNNING, JobState.STOPPING)


# Each state as people read it; one word per state for every job and run folder.
STATE_NAMES = {
    JobState.NEW: Msg("new"),
    JobState.QUEUED: Msg("queued"),
    JobState.STARTING: Msg("starting"),
    JobState.LOADING: Msg("loading"),
    JobState.RUNNING: Msg("running"),
    JobState.STOPPING: Msg("stopping"),
    JobState.STOPPED: Msg("stopped"),
    JobState.FINISHED: Msg("finished"),
    JobState.FAILED: Msg("failed"),
}


def unexpected_failure(what: Msg, err: BaseException) -> Msg:
    """``<what> failed: <Type>: <first line of the error>``, for an error nobody foresaw."""
    lines = str(err).strip().splitlines()
    detail = f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__
    return Msg("{what} failed: {detail}", what=what, detail=detail)


class Job:
    """One piece of background work and where it stands; read it from any thread.

    ``what`` names the work as the subject of a sentence ("Training", "训练"): it opens
    the message of an unexpected failure. ``stop_event`` is the stop request the work
    checks; pass one to share it (a CLI's Ctrl-C).
    """

    def __init__(self, name: str, what: Msg, stop_event: threading.Event | None = None):
        self.name = name
        self.what = what
        self.state = JobState.STARTING
        self.message = Msg("")  # the outcome or the failure
        self.done: int = 0
        self.total: int | None = None
        self.stop_event = stop_event or threading.Event()
        self.started = time.time()
        self.ended: float | None = None
        self.result: Any = None  # what the work returned
        self.thread: threading.Thread | None = None
        self.queue: JobQueue | None = None  # the line the job waits in, if any
        self._lock = threading.Lock()
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._eta_s: float | None = None
        self._running_since: float | None = None  # monotonic: rate and ETA leave start-up out
        self._ended_at: float | None = None
        self._over = threading.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.state.value}>"

    @property
    def active(self) -> bool:
        return self.state.active

    # ---------------------------------------------------------------- what the work calls

    def set_phase(self, state: JobState) -> None:
        """Move on to ``state`` (loading, running); a job asked to stop stays ``stopping``."""
        with self._lock:
            if self.state.active:
                self.state = JobState.STOPPING if self.stop_event.is_set() else state

    def mark_running(self) -> None:
        """The work proper begins: state ``running``, and the clock for rate and ETA starts now."""
        self._running_since = time.monotonic()
        self.set_phase(JobState.RUNNING)

    def report(self, done: int, total: int | None = None, eta_s: float | None = None) -> None:
        """Progress: ``done`` of ``total`` units; ``eta_s`` when the work knows the time left better."""
        with self._lock:
            self.done, self.total, self._eta_s = done, total, eta_s

    def log(self, line: str) -> None:
        """Add a line to the log tail (the last :data:`LOG_LINES` lines are kept)."""
        self._log.append(str(line))

    def finish(self, state: JobState | None = None, message: Msg | None = None) -> None:
        """End the job: ``state`` (by default ``stopped`` when a stop was asked for, else ``finished``)."""
        if state is None:
            state = JobState.STOPPED if self.stop_event.is_set() else JobState.FINISHED
        self._end(state, message)

    def fail(self, message: Msg) -> None:
        """End the job as ``failed`` with ``message``, the reason."""
        self._end(JobState.FAILED, message)

    def _end(self, state: JobState, message: Msg | None) -> None:
        with self._lock:
            if self._over.is_set():
                return
            self.state = state
            if message is not None:
                self.message = message
            self.ended, self._ended_at = time.time(), time.monotonic()
        if self.message:
            self.log(self.message)
        self._over.set()

    def run(self, work: Callable[[Job], Any]) -> None:
        """Run ``work(self)`` here to its end; whatever happens, the job ends with a state and a sentence."""
        try:
            self.result = work(self)
        except LabError as err:
            self.fail(msg_of(err))
        except Exception as err:  # a bug must not kill the app: one sentence here, the traceback in the log
            logger.error("%s failed", self.what, exc_info=err)
            self.fail(unexpected_failure(self.what, err))
        else:
            self.finish()

    # ---------------------------------------------------------------- what readers call

    def stop(self) -> None:
        """Ask the work to stop (it keeps what it finished); a queued job leaves the queue."""
        if self.queue is not None and self.queue.withdraw(self):
            return
        with self._lock:
            if self.state.active:
                self.state = JobState.STOPPING
        self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the job to end; True when it has."""
        if not self._over.wait(timeout):
            return False
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()  # what runs after the work (the queue's next job) is under way too
        return True

    def log_tail(self, lines: int = LOG_LINES) -> list[str]:
        """The last ``lines`` lines of the log."""
        with self._lock:
            kept = list(self._log)
        return kept[-lines:] if lines > 0 else []

    @property
    def remaining(self) -> int | None:
        """Units left, when the total is known."""
        return None if self.total is None else max(0, self.total - self.done)

    @property
    def fraction(self) -> float | None:
        """Share done, 0 to 1 (None while the total is unknown)."""
        left = self.remaining
        if left is None:
            return None
        whole = self.done + left
        return self.done / whole if whole else (1.0 if self.state is JobState.FINISHED else 0.0)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the work proper began (0 before); stops counting when the job ends."""
        if self._running_since is None:
            return 0.0
        end = self._ended_at if self._ended_at is not None else time.monotonic()
        return max(0.0, end - self._running_since)

    @property
    def rate(self) -> float:
        """Units per second since the work proper began."""
        elapsed = self.elapsed_s
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left: the work's own estimate, else what is left at the rate so far."""
        if self._eta_s is not None:
            return self._eta_s
        left, rate = self.remaining, self.rate
        return left / rate if left is not None and rate > 0 else None

    def snapshot(self) -> dict:
        """A plain copy of where the job stands, for a page or the CLI."""
        with self._lock:
            state, message, done, total = self.state, self.message, self.done, self.total
        return {
            "name": self.name,
            "state": state,
            "label": state.label,
            "message": message,
            "done": done,
            "total": total,
            "remaining": self.remaining,
            "fraction": self.fraction,
            "rate": self.rate,
            "eta_s": self.eta_s,
            "elapsed_s": self.elapsed_s,
            "started": self.started,
            "ended": self.ended,
        }


def start_job(work: Callable[[Job], Any], job: Job, then: Callable[[], None] | None = None) -> Job:
    """Run ``work(job)`` in a daemon thread (see :meth:`Job.run`); ``then()`` runs after it ends. Returns ``job``."""

    def main() -> None:
        try:
            job.run(work)
        finally:
            if then is not None:
                then()

    job.thread = threading.Thread(target=main, name=f"job-{job.name}", daemon=True)
    job.thread.start()
    return job


class JobQueue:
    """Jobs that take turns: one goes on, later ones wait in line and start when the ones before end.

    Hold ``lock`` around a check and :meth:`submit` when the check must see the same line
    that the job joins (a name in use, say).
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.current: Job | None = None  # the job started last (going on or ended)
        self._waiting: list[tuple[Job, Callable[[Job], Any]]] = []

    def busy(self) -> bool:
        """A job is going on."""
        with self.lock:
            return self.current is not None and self.current.active

    def jobs(self) -> list[Job]:
        """The job going on and the ones waiting, in order."""
        with self.lock:
            line = [self.current] if self.busy() else []
            return line + [job for job, _ in self._waiting]

    def position(self, job: Job) -> int:
        """How many jobs are ahead of ``job`` (0 when it is not waiting)."""
        with self.lock:
            waiting = [queued for queued, _ in self._waiting]
            return waiting.index(job) + 1 if job in waiting else 0

    def submit(self, job: Job, work: Callable[[Job], Any]) -> Job:
        """Start ``job`` now if nothing is going on, else queue it (state ``queued``)."""
        job.queue = self
        with self.lock:
            if self.busy():
                job.state = JobState.QUEUED
                self._waiting.append((job, work))
                return job
            self.current = job
            return start_job(work, job, then=self._next)

    def withdraw(self, job: Job) -> bool:
        """Take a waiting ``job`` out of the line, ended as ``stopped``; False when it was not waiting."""
        with self.lock:
            entry = next((entry for entry in self._waiting if entry[0] is job), None)
            if entry is None:
                return False
            self._waiting.remove(entry)
        job.finish(JobState.STOPPED, Msg("removed from the queue before it started"))
        return True

    def _next(self) -> None:
        with self.lock:
            if not self._waiting:
                return
            job, work = self._waiting.pop(0)
            job.state = JobState.STARTING
            self.current = job
            start_job(work, job, then=self._next)
