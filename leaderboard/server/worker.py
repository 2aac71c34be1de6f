"""The worker: takes queued submissions with a lease and runs the CLI's checks on them, nothing else.

One job = :func:`~cvit_bench.leaderboard.submit.verify_bundle`, the CLI's steps 1-5: archive checks before
anything is extracted, extraction into the job's own folder, hashes, schemas, exact id coverage ("verifying"),
then re-scoring against the board's references ("re-scoring") → the entry is written to
``jobs/<id>/entry.json`` and the submission waits for a maintainer. Nothing reaches the board here: publishing
happens on approval (:mod:`.moderation`). A refusal is stored as the submission's reason, with the server's
own folders replaced by neutral names (``bundle.tar.gz``, ``DATA``) so no server path leaks to the submitter.

``cvit-bench leaderboard worker`` runs :func:`run_worker` in its own process; ``serve`` runs it in a thread by
default. Any number of workers may share one database (leases keep them apart).
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from cvit_bench.errors import CvitError
from cvit_bench.files import atomic_write_json

from ..submit import verify_bundle
from . import db, queue
from .config import ServerConfig

log = logging.getLogger("cvit_bench.leaderboard.server")
BUNDLE_NAME = "bundle.tar.gz"
ENTRY_NAME = "entry.json"


def job_dir(cfg: ServerConfig, sid: str) -> Path:
    return cfg.jobs_dir / sid


def redact(message: str, cfg: ServerConfig, sid: str) -> str:
    """The refusal as the CLI words it, with the server's own paths replaced by what the submitter knows."""
    folder = job_dir(cfg, sid)
    replacements = [(str(folder / BUNDLE_NAME), BUNDLE_NAME), (str(folder.resolve() / BUNDLE_NAME), BUNDLE_NAME),
                    (str(folder.resolve()), "(job)"), (str(folder), "(job)")]
    if cfg.data_dir is not None:
        replacements += [(str(cfg.data_dir.resolve()), "DATA"), (str(cfg.data_dir), "DATA")]
    replacements += [(str(Path(cfg.board).resolve()), "BOARD"), (str(cfg.board), "BOARD")]
    for old, new in replacements:
        message = message.replace(old, new)
    return message


def worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaseLost(Exception):
    """Another worker took the job over (this one was too slow): stop without writing anything."""


def process(cfg: ServerConfig, sessions, job: queue.SubmissionView, owner: str) -> str:
    """Run one claimed job to ``awaiting approval`` or ``rejected``; returns the state it ended in."""
    folder = job_dir(cfg, job.id)
    actor = f"worker {owner}"

    def stage(state: str) -> None:
        if not queue.renew(sessions, job.id, owner, cfg.lease_s, state):
            raise LeaseLost(job.id)

    if job.attempts > cfg.max_attempts:
        queue.transition(sessions, job.id, db.IN_PROGRESS, db.REJECTED, actor, owner=owner,
                         reason=f"the worker stopped {cfg.max_attempts} times while checking this bundle")
        return db.REJECTED
    work = folder / "work"
    shutil.rmtree(work, ignore_errors=True)          # a previous attempt's extraction, if its worker was killed
    work.mkdir(parents=True)
    beat = Heartbeat(sessions, job.id, owner, cfg.lease_s)
    try:
        entry = verify_bundle(folder / BUNDLE_NAME, data=cfg.data_dir, limits=cfg.limits, workdir=work,
                              on_stage=stage)
        atomic_write_json(folder / ENTRY_NAME, entry.to_dict())
        done = queue.transition(sessions, job.id, db.IN_PROGRESS, db.AWAITING, actor, owner=owner,
                                entry_id=entry.id, lease_owner=None, lease_until=0.0)
        if not done:
            raise LeaseLost(job.id)
        return db.AWAITING
    except CvitError as exc:
        reason = redact(str(exc), cfg, job.id)
        queue.transition(sessions, job.id, db.IN_PROGRESS, db.REJECTED, actor, owner=owner, reason=reason,
                         lease_owner=None, lease_until=0.0)
        return db.REJECTED
    finally:
        beat.stop()
        shutil.rmtree(work, ignore_errors=True)


class Heartbeat:
    """Renews a job's lease every third of it while this worker is alive, so a long re-scoring keeps its job;
    a killed worker stops beating and its job is claimed again after the lease."""

    def __init__(self, sessions, sid: str, owner: str, lease_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sessions, sid, owner, lease_s), daemon=True,
                                        name=f"lease-{sid[:8]}")
        self._thread.start()

    def _run(self, sessions, sid: str, owner: str, lease_s: float) -> None:
        while not self._stop.wait(lease_s / 3):
            try:
                if not queue.extend_lease(sessions, sid, owner, lease_s):
                    return
            except Exception:                            # a busy database: the next beat tries again
                log.warning("job %s: lease renewal failed", sid, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run_once(cfg: ServerConfig, sessions, owner: str) -> str | None:
    """Claim and process one job; None when the queue is empty."""
    job = queue.claim(sessions, owner, cfg.lease_s)
    if job is None:
        return None
    try:
        return process(cfg, sessions, job, owner)
    except LeaseLost:
        log.warning("job %s: lease lost to another worker; dropped", job.id)
        return "lease lost"
    except Exception:                       # a bug, not the submitter's fault: retried after the lease
        log.exception("job %s failed; it is retried after its lease", job.id)
        return "error"


def run_worker(cfg: ServerConfig, sessions, *, stop: threading.Event | None = None, max_jobs: int | None = None,
               idle_exit_s: float | None = None) -> int:
    """Process jobs until ``stop`` is set, ``max_jobs`` were done, or the queue was empty for ``idle_exit_s``;
    returns the number of jobs processed."""
    owner = worker_id()
    stop = stop or threading.Event()
    done = 0
    idle_since = time.monotonic()
    log.info("worker %s started", owner)
    while not stop.is_set() and (max_jobs is None or done < max_jobs):
        outcome = run_once(cfg, sessions, owner)
        if outcome is None:
            if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                break
            stop.wait(cfg.worker_poll_s)
            continue
        done += 1
        idle_since = time.monotonic()
        log.info("worker %s: job → %s", owner, outcome)
    return done
