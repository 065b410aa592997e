"""URL paths of the service."""

from __future__ import annotations

__all__ = ["API_PREFIX", "job_path", "model_path"]

API_PREFIX = "/api/v1/factor-engine"


def model_path(model_id: str) -> str:
    """Path of a model's summary."""
    return f"{API_PREFIX}/models/{model_id}"


def job_path(job_id: str) -> str:
    """Path of a job's status."""
    return f"{API_PREFIX}/jobs/{job_id}"
