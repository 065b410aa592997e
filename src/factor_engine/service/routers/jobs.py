"""Background build jobs: GET /jobs, GET /jobs/{id}, DELETE /jobs/{id}, POST /jobs/{id}/retry."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Response, status

from factor_engine.service import model_reads
from factor_engine.service.deps import State
from factor_engine.service.fastjson import FastJSONRoute
from factor_engine.service.schemas import JobAccepted, JobResponse

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=FastJSONRoute)


@router.get("", response_model=list[JobResponse])
def list_jobs(
    state: State,
    status_filter: Literal["queued", "running", "succeeded", "failed"] | None = Query(None, alias="status"),
    limit: int = Query(100, ge=1, le=1000),
) -> list[JobResponse]:
    """Recent jobs, newest first."""
    return model_reads.list_jobs(state, status_filter, limit)


@router.get("/{job_id}", response_model=JobResponse, responses={404: {"description": "no job with that id"}})
def get_job(job_id: str, state: State) -> JobResponse:
    """A job's status, stage, progress (0–1), error, timings and, when done, its model's URL."""
    return model_reads.get_job(state, job_id)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        404: {"description": "no job with that id"},
        409: {"description": "the job is queued or running, or succeeded (delete its model instead)"},
    },
)
def delete_job(job_id: str, state: State) -> Response:
    """Delete a failed job's record (e.g. one failed because its worker's lease expired)."""
    model_reads.delete_job(state, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{job_id}/retry",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"description": "no job with that id"}, 409: {"description": "the job has not failed"}},
)
def retry_job(job_id: str, state: State) -> JobAccepted:
    """Queue a new job with the request of a failed one."""
    return model_reads.retry_job(state, job_id)
