"""Who is acting: carried from the HTTP layer (or CLI, or a worker) into the
store, which records it in the audit log and the lifecycle history."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """The token (or system job) behind a change, and the request (or job
    run) it came in."""

    name: str
    token_id: str | None = None
    request_id: str | None = None
    job_run_id: int | None = None
    """The scheduled job's run (``job_runs.id``) making the change, if any."""


def job_actor(job: str, run_id: int) -> Actor:
    """The actor of a scheduled job's run: ``job:<name>``, with the run's id
    as its request id too, so audit rows name the run."""
    return Actor(name=f"job:{job}", request_id=f"job-run-{run_id}", job_run_id=run_id)


SYSTEM = Actor(name="system")
