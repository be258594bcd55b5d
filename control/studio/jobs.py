"""Work that outlives a request (a capture, a deploy): a thread per job, its progress read by polling.

A job is `{id, kind, state: running|done|failed, progress, result, error}`; a failure keeps
the domain error's message, which is what the page shows.
"""
import itertools
import logging
import threading
import time

from core.errors import DeepLensError, NotFound

log = logging.getLogger(__name__)
KEEP = 50  # finished jobs remembered


class Job:
    def __init__(self, job_id, kind):
        self.id, self.kind, self.state = job_id, kind, "running"
        self.progress, self.result, self.error = {}, None, None
        self.started, self.ended = time.time(), None

    def update(self, **progress):
        self.progress = {**self.progress, **progress}

    def to_json(self):
        return {"id": self.id, "kind": self.kind, "state": self.state, "progress": self.progress,
                "result": self.result, "error": self.error, "started": self.started, "ended": self.ended}


class Jobs:
    def __init__(self):
        self._jobs, self._ids, self._lock = {}, itertools.count(1), threading.Lock()

    def start(self, kind, work):
        """Run `work(job)` in a thread; its return value becomes the job's result."""
        with self._lock:
            job = Job(str(next(self._ids)), kind)
            self._jobs[job.id] = job
            for old in [j for j in self._jobs.values() if j.state != "running"][:-KEEP]:
                del self._jobs[old.id]
        threading.Thread(target=self._run, args=(job, work), name=f"job-{kind}-{job.id}", daemon=True).start()
        return job

    @staticmethod
    def _run(job, work):
        try:
            job.result = work(job)
            job.state = "done"
        except DeepLensError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # a bug: the page still learns that the job ended, and why
            log.exception("%s job failed", job.kind)
            job.error, job.state = f"{exc.__class__.__name__}: {exc}", "failed"
        job.ended = time.time()

    def get(self, job_id):
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", "no_job")
        return job
