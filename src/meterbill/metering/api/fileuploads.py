"""File uploads of measurements: upload URL, the upload itself, and job status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import anyio.from_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from meterbill.core.errors import InvalidInput, NotFound
from meterbill.core.runtime import Runtime, RuntimeDep, SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import fileuploads
from meterbill.metering.auth import CallerDep
from meterbill.metering.listquery import ListQuery, list_params, retrieve_params
from meterbill.metering.models import FileUploadJob
from meterbill.metering.paging import page_body

router = APIRouter(tags=["metering"], default_response_class=ExactJSONResponse)
PREFIX = "/organizations/{orgId}/fileuploads/measurements"


class UploadUrlRequest(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    file_name: Annotated[str, Field(min_length=1, max_length=500)]
    content_type: str
    content_length: Annotated[int, Field(ge=1, le=50 * 1024**3)]


@router.post(PREFIX + "/generateUploadUrl", summary="Get a URL to upload a measurements file to")
def generate_upload_url(
    body: UploadUrlRequest, caller: CallerDep, session: SessionDep, runtime: RuntimeDep
) -> ExactJSONResponse:
    job = fileuploads.create_job(
        session, caller.org_id, caller.principal,
        file_name=body.file_name, content_type=body.content_type, content_length=body.content_length,
    )
    token = fileuploads.upload_token(runtime.vault, job)
    url = f"{runtime.settings.base_url()}/organizations/{caller.org_id}/fileuploads/measurements/upload/{job.id}"
    return ExactJSONResponse(
        {"jobId": job.id, "url": f"{url}?token={token}", "headers": {"Content-Type": body.content_type}}
    )


@router.put(PREFIX + "/upload/{jobId}", summary="Upload the file (the URL from generateUploadUrl is the credential)")
async def upload_file(
    orgId: str, jobId: str, request: Request, runtime: RuntimeDep, token: str = Query()
) -> ExactJSONResponse:
    # Streamed straight into the database in chunks: the file can be larger than memory.
    chunks = _rechunk(request)
    job = await run_in_threadpool(
        fileuploads.receive_upload, runtime.db, runtime.vault, orgId, jobId, token, _SyncChunks(chunks)
    )
    return ExactJSONResponse(fileuploads.render(job))


async def _rechunk(request: Request):
    buffer = b""
    async for piece in request.stream():
        buffer += piece
        while len(buffer) >= fileuploads.CHUNK_BYTES:
            yield buffer[: fileuploads.CHUNK_BYTES]
            buffer = buffer[fileuploads.CHUNK_BYTES:]
    if buffer:
        yield buffer


class _SyncChunks:
    """Lets the (threadpool) database code pull chunks from the async request stream."""

    def __init__(self, chunks) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield anyio.from_thread.run(self._chunks.__anext__)
            except StopAsyncIteration:
                return


JOB_LIST = list_params("dateCreatedEnd", "dateCreatedStart", "fileKey")


@router.get(PREFIX + "/jobs", summary="List file upload jobs", openapi_extra=JOB_LIST.openapi)
def list_jobs(
    caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, JOB_LIST.depends]
) -> ExactJSONResponse:
    rows, token = fileuploads.list_jobs(
        session, caller.org_id, page_size=query.page_size, next_token=query.next_token,
        created_from=query.instant("dateCreatedStart"), created_before=query.instant("dateCreatedEnd"),
        file_key=query.text("fileKey"),
    )
    return ExactJSONResponse(page_body([fileuploads.render(j) for j in rows], token))


@router.get(PREFIX + "/jobs/{id}", summary="Retrieve a file upload job: status and row counts")
def retrieve_job(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(fileuploads.render(fileuploads.get_job(session, caller.org_id, id)))


@router.get(PREFIX + "/jobs/{id}/original", summary="A download URL for the file a job uploaded")
def original_download_url(id: str, caller: CallerDep, session: SessionDep, runtime: RuntimeDep) -> ExactJSONResponse:
    """`jobId` is the upload job's own id: the download needs no job of its own here."""
    job = fileuploads.get_job(session, caller.org_id, id)
    url = _download_url(runtime, job, fileuploads.ORIGINAL)
    return ExactJSONResponse({"jobId": job.id, "url": url, "headers": {}})


FAILED_INGEST = retrieve_params("file")


@router.get("/organizations/{orgId}/measurements/failedIngest/getDownloadUrl",
            summary="A download URL for the rows a file upload refused", openapi_extra=FAILED_INGEST.openapi)
def failed_ingest_download_url(
    caller: CallerDep, session: SessionDep, runtime: RuntimeDep, query: Annotated[ListQuery, FAILED_INGEST.depends]
) -> ExactJSONResponse:
    """`file` names a failed ingest: here, the id of the file upload job whose refused rows
    (JSON lines `{"row", "message"}`) the URL downloads."""
    file = query.text("file")
    if file is None:
        raise InvalidInput("file is required: the id of a file upload job", param="file")
    job = fileuploads.get_job(session, caller.org_id, file)
    return ExactJSONResponse({"url": _download_url(runtime, job, fileuploads.FAILED_ROWS)})


def _download_url(runtime: Runtime, job: FileUploadJob, what: str) -> str:
    token = fileuploads.download_token(runtime.vault, job, what)
    prefix = PREFIX.format(orgId=job.organization_id)
    return f"{runtime.settings.base_url()}{prefix}/jobs/{job.id}/{what}/download?token={token}"


# The targets of the download URLs: the signed token stands in for the credentials.
@router.get(PREFIX + "/jobs/{jobId}/{what}/download", include_in_schema=False)
def download(orgId: str, jobId: str, what: str, runtime: RuntimeDep, token: str = Query()) -> StreamingResponse:
    if what not in (fileuploads.ORIGINAL, fileuploads.FAILED_ROWS):
        raise NotFound(f"no download {what}")
    fileuploads.check_download(runtime.vault, orgId, jobId, token, what)
    if what == fileuploads.ORIGINAL:
        with runtime.db.read() as session:
            content_type = fileuploads.get_job(session, orgId, jobId).content_type
        return StreamingResponse(fileuploads.original_file(runtime.db, jobId), media_type=content_type)
    return StreamingResponse(fileuploads.failed_rows(runtime.db, jobId), media_type="application/x-ndjson")


@router.get(PREFIX + "/jobs/{id}/errors", summary="The rows a file upload job refused, with reasons")
def job_errors(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    job = fileuploads.get_job(session, caller.org_id, id)
    return ExactJSONResponse(
        {"data": [{"row": e.row, "message": e.message} for e in fileuploads.errors_of(session, job)]}
    )
