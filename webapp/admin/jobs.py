"""RQ's failed jobs, for the operations page and `flask status`: listed, and retried."""

from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result

from webapp.core.queues import QUEUES, STREAM_QUEUE, rq_connection
from webapp.exceptions import NotFound

DEFAULT_LIMIT = 50  # newest first, per queue: a page to act on, not an archive


def _registry(name):
    return FailedJobRegistry(name, connection=rq_connection())


def counts():
    """{queue: failed jobs kept} (RQ keeps them DEFAULT_FAILURE_TTL)."""
    return {name: _registry(name).count for name in (*QUEUES, STREAM_QUEUE)}


def failed(limit=DEFAULT_LIMIT):
    """[{id, queue, function, error, ended_at}] newest first over every queue."""
    found = []
    for name in (*QUEUES, STREAM_QUEUE):
        ids = _registry(name).get_job_ids(0, limit - 1, desc=True)
        for job in Job.fetch_many(ids, connection=rq_connection()):
            if job is not None:  # expired between the two reads
                found.append(_describe(job, name))
    found.sort(key=lambda j: j["ended_at"] or "", reverse=True)
    return found[:limit]


def failed_ids():
    """Every failed job's id, over every queue (not only a page of them)."""
    return [job_id for name in (*QUEUES, STREAM_QUEUE) for job_id in _registry(name).get_job_ids()]


def _describe(job, queue):
    result = job.latest_result()
    error = result.exc_string if result is not None and result.type == Result.Type.FAILED else ""
    return {"id": job.id, "queue": queue, "function": job.func_name,
            "error": _exception_line(error or ""),
            "ended_at": job.ended_at.isoformat(timespec="seconds") if job.ended_at else None}


def _exception_line(traceback):
    """The last exception's first line ("OperationalError: ... database is locked"): the
    traceback's last line may be the message's tail (SQLAlchemy's ends with a link)."""
    lines = traceback.strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    after = lines[frames[-1] + 1:] if frames else lines
    return next((line.strip() for line in after if line.strip() and not line[0].isspace()),
                lines[-1].strip() if lines else "")


def retry(job_id):
    """Put a failed job back on its queue (its meta, and so its request id, kept)."""
    for name in (*QUEUES, STREAM_QUEUE):
        registry = _registry(name)
        if job_id in registry:
            try:
                return registry.requeue(job_id).id
            except (InvalidJobOperation, NoSuchJobError):
                break  # retried by someone else a moment ago, or expired
    raise NotFound(f"no failed job {job_id}")
