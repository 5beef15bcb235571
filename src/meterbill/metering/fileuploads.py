"""Measurement file uploads: a signed upload URL, the bytes kept in the database,
and a worker that ingests the file in batches with visible progress.

The file is a JSON array of measurements or JSON lines, of any size: it is read as
a stream of chunks and decoded one measurement at a time. Each bad row is recorded
with its row number and reason; the good rows around it are stored. Every batch
commits its measurements, its errors and the resume point together, and only while
the worker still holds the job's lease, so a worker that dies mid-file resumes where
the last batch ended (within one outbox lease), and rows without a `uid` get one
derived from the job and row number so a resumed batch cannot double them. A worker
told to stop hands the file back after its current batch, for the next one to resume.
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from meterbill.core.db import Database, must_get, new_id, utcnow
from meterbill.core.errors import Forbidden, InvalidInput, InvalidState, NotFound
from meterbill.core.outbox import Delivery, HandBack, LeaseLost, enqueue, handles
from meterbill.core.security import Vault
from meterbill.metering import ingest
from meterbill.metering.models import FileUploadChunk, FileUploadError, FileUploadJob
from meterbill.metering.paging import keyset_page

log = structlog.get_logger("meterbill.fileuploads")

FILE_UPLOAD_TOPIC = "metering.file_upload"
CHUNK_BYTES = 1 << 20
BATCH_ROWS = 1000
UPLOAD_URL_TTL = timedelta(minutes=15)
DOWNLOAD_URL_TTL = timedelta(minutes=5)  # m3ter's presigned download URLs last 5 minutes
ORIGINAL, FAILED_ROWS = "original", "failed"  # what a download URL gives: the file, or its refused rows
CONTENT_TYPES = ("application/json", "text/json", "application/x-ndjson", "application/jsonl")
NOT_UPLOADED, RUNNING, FAILED, SUCCEEDED = "notUploaded", "running", "failed", "succeeded"


def create_job(
    session: Session, org_id: str, principal: str, *, file_name: str, content_type: str, content_length: int
) -> FileUploadJob:
    if content_type not in CONTENT_TYPES:
        raise InvalidInput(f"contentType must be one of {', '.join(CONTENT_TYPES)}", param="contentType")
    now = utcnow()
    job = FileUploadJob(
        id=new_id(), organization_id=org_id, file_name=file_name, content_type=content_type,
        content_length=content_length, status=NOT_UPLOADED, version=1, created_by=principal,
        created_at=now, modified_at=now,
    )
    session.add(job)
    session.flush()
    return job


def upload_token(vault: Vault, job: FileUploadJob) -> str:
    return vault.sign_token({"upload": job.id, "org": job.organization_id}, int(UPLOAD_URL_TTL.total_seconds()))


def download_token(vault: Vault, job: FileUploadJob, what: str) -> str:
    """The credential of a download URL: one job's file (ORIGINAL) or its refused rows (FAILED_ROWS)."""
    if job.status == NOT_UPLOADED:
        raise InvalidState(f"file upload job {job.id} has no file yet")
    claims: dict[str, object] = {"download": job.id, "org": job.organization_id, "what": what}
    return vault.sign_token(claims, int(DOWNLOAD_URL_TTL.total_seconds()))


def check_download(vault: Vault, org_id: str, job_id: str, token: str, what: str) -> None:
    claims = vault.verify_token(token)
    if claims is None or claims.get("download") != job_id or claims.get("org") != org_id or claims.get("what") != what:
        raise Forbidden("the download URL is invalid or has expired", param="token")


def original_file(db: Database, job_id: str) -> Iterator[bytes]:
    """The uploaded bytes as they came, chunk by chunk (the file can be larger than memory)."""
    return _byte_chunks(db, job_id)


def failed_rows(db: Database, job_id: str) -> Iterator[bytes]:
    """The refused rows as JSON lines `{"row", "message"}`, in row order, a page at a time."""
    after = 0
    while True:
        with db.read() as session:
            page = list(session.scalars(select(FileUploadError).where(
                FileUploadError.job_id == job_id, FileUploadError.row > after,
            ).order_by(FileUploadError.row).limit(BATCH_ROWS)))
        if not page:
            return
        yield b"".join(json.dumps({"row": e.row, "message": e.message}).encode() + b"\n" for e in page)
        after = page[-1].row


def get_job(session: Session, org_id: str, job_id: str) -> FileUploadJob:
    job = session.get(FileUploadJob, job_id)
    if job is None or job.organization_id != org_id:
        raise NotFound(f"file upload job {job_id} not found")
    return job


def list_jobs(
    session: Session, org_id: str, *, page_size: int, next_token: str | None, created_from: datetime | None,
    created_before: datetime | None, file_key: str | None,
) -> tuple[list[FileUploadJob], str | None]:
    """`fileKey` (deprecated in m3ter, where it names the stored object) is the uploaded file's name here."""
    query = select(FileUploadJob).where(FileUploadJob.organization_id == org_id)
    if created_from is not None:
        query = query.where(FileUploadJob.created_at >= created_from)
    if created_before is not None:
        query = query.where(FileUploadJob.created_at < created_before)
    if file_key is not None:
        query = query.where(FileUploadJob.file_name == file_key)
    return keyset_page(session, query, FileUploadJob.id, page_size, next_token)


def receive_upload(
    db: Database, vault: Vault, org_id: str, job_id: str, token: str, chunks: Iterable[bytes]
) -> FileUploadJob:
    """Store the uploaded bytes and queue the ingest; the token is the upload URL's signature."""
    claims = vault.verify_token(token)
    if claims is None or claims.get("upload") != job_id or claims.get("org") != org_id:
        # A refused credential, as a bad presigned URL is refused by the storage m3ter uses.
        raise Forbidden("the upload URL is invalid or has expired", param="token")
    with db.read() as session:
        _open_job(session, job_id)
    # One short transaction per chunk: a slow client must not hold the database's
    # write lock (SQLite has one) for the whole upload.
    size = 0
    try:
        with db.transaction() as session:
            session.execute(delete(FileUploadChunk).where(FileUploadChunk.job_id == job_id))  # an aborted attempt
        for sequence, chunk in enumerate(chunks):
            size += len(chunk)
            with db.transaction() as session:
                session.add(FileUploadChunk(job_id=job_id, sequence=sequence, data=chunk))
        if size == 0:
            raise InvalidInput("the uploaded file is empty")
        with db.transaction() as session:
            job = _open_job(session, job_id)
            job.content_length = size
            job.status = RUNNING
            job.uploaded_at = utcnow()
            job.modified_at = job.uploaded_at
            job.version += 1
            enqueue(session, FILE_UPLOAD_TOPIC, {"job_id": job_id})
            return job
    except Exception:
        with db.transaction() as session:
            if must_get(session, FileUploadJob, job_id).status == NOT_UPLOADED:
                session.execute(delete(FileUploadChunk).where(FileUploadChunk.job_id == job_id))
        raise


def _open_job(session: Session, job_id: str) -> FileUploadJob:
    job = session.get(FileUploadJob, job_id)
    if job is None:
        raise NotFound(f"file upload job {job_id} not found")
    if job.status != NOT_UPLOADED:
        raise InvalidState(f"file upload job {job_id} already has its file")
    return job


def errors_of(session: Session, job: FileUploadJob, limit: int = 1000) -> list[FileUploadError]:
    return list(
        session.scalars(
            select(FileUploadError).where(FileUploadError.job_id == job.id).order_by(FileUploadError.row).limit(limit)
        )
    )


def render(job: FileUploadJob) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": job.id,
        "fileName": job.file_name,
        "contentLength": job.content_length,
        "status": job.status,
        "totalRows": job.total_rows,
        "processedRows": job.processed_rows,
        "failedRows": job.failed_rows,
        "version": job.version,
    }
    if job.uploaded_at is not None:
        wire["uploadDate"] = job.uploaded_at.isoformat().replace("+00:00", "Z")
    if job.error:
        wire["error"] = job.error
    return wire


# --- the worker side ---------------------------------------------------------------------


def _byte_chunks(db: Database, job_id: str) -> Iterator[bytes]:
    with db.read() as session:
        count = session.scalar(select(func.count()).where(FileUploadChunk.job_id == job_id)) or 0
    for sequence in range(count):
        with db.read() as session:
            data = must_get(session, FileUploadChunk, (job_id, sequence)).data
        yield data  # outside the transaction: the consumer takes its time


_SEPARATORS = " \t\r\n,"  # between the elements of a JSON array


def _text_chunks(chunks: Iterable[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for chunk in chunks:
        yield decoder.decode(chunk)
    yield decoder.decode(b"", final=True)


def _rows(chunks: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
    """(row number from 1, decoded value or a ValueError) for a JSON array or JSON lines stream."""
    texts = _text_chunks(chunks)
    buffer = ""
    for text in texts:
        buffer += text
        if buffer.strip():
            break
    buffer = buffer.lstrip()
    if buffer.startswith("["):
        yield from _array_rows(buffer[1:], texts)
    else:
        yield from _line_rows(buffer, texts)


def _line_rows(buffer: str, texts: Iterator[str]) -> Iterator[tuple[int, Any]]:
    row = 0
    for text in itertools.chain([""], texts):
        buffer += text
        *lines, buffer = buffer.split("\n")
        for line in lines:
            if line.strip():
                row += 1
                yield row, _decode_line(line)
    if buffer.strip():
        yield row + 1, _decode_line(buffer)


def _array_rows(buffer: str, texts: Iterator[str]) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    row, pos, exhausted = 0, 0, False
    while True:
        while pos < len(buffer) and buffer[pos] in _SEPARATORS:
            pos += 1
        if buffer.startswith("]", pos):
            return
        try:
            value, pos = decoder.raw_decode(buffer, pos)
        except json.JSONDecodeError as exc:
            if exhausted:
                if buffer[pos:].strip():
                    yield row + 1, ValueError(f"invalid JSON: {exc.msg}")
                return
            # The value may continue in the next chunk: read more, dropping what is consumed.
            buffer = buffer[pos:]
            pos = 0
            more = next(texts, None)
            if more is None:
                exhausted = True
            else:
                buffer += more
            continue
        row += 1
        yield row, value


def _decode_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return ValueError(f"invalid JSON: {exc.msg}")


@handles(FILE_UPLOAD_TOPIC)
def ingest_file(delivery: Delivery) -> None:
    db = delivery.db
    job_id = delivery.payload["job_id"]
    with db.read() as session:
        job = session.get(FileUploadJob, job_id)
        if job is None or job.status != RUNNING:
            return
        org_id, resume_after = job.organization_id, job.total_rows
    batch: list[tuple[int, Any]] = []
    try:
        for row, value in _rows(_byte_chunks(db, job_id)):
            if row <= resume_after:
                continue  # committed by an earlier, interrupted attempt
            batch.append((row, value))
            if len(batch) == BATCH_ROWS:
                with delivery.holding() as session:
                    _store_rows(session, org_id, job_id, batch)
                batch = []
                if delivery.stopping:
                    raise HandBack()  # resumed after this batch by the next worker
    except (LeaseLost, HandBack):
        raise  # another worker owns the job now, or will
    except Exception as exc:  # a failure must show on the job, not only in the logs
        log.exception("file_upload_failed", job_id=job_id)
        with delivery.commit() as session:
            _finish(session, job_id, FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        return
    with delivery.commit() as session:
        if batch:
            _store_rows(session, org_id, job_id, batch)
        _finish(session, job_id, SUCCEEDED)


def _finish(session: Session, job_id: str, status: str, error: str | None = None) -> None:
    job = must_get(session, FileUploadJob, job_id)
    job.status = status
    job.error = error
    job.version += 1
    job.modified_at = utcnow()


def _store_rows(session: Session, org_id: str, job_id: str, batch: list[tuple[int, Any]]) -> None:
    items = [value for _, value in batch if isinstance(value, dict)]
    meters = ingest.load_meters(session, org_id, items)
    good: list[ingest.ParsedMeasurement] = []
    failures: list[FileUploadError] = []
    for row, value in batch:
        if isinstance(value, ValueError):
            failures.append(FileUploadError(job_id=job_id, row=row, message=str(value)))
            continue
        if isinstance(value, dict) and value.get("uid") is None:
            value = {**value, "uid": f"{job_id}:{row}"}
        try:
            good.append(ingest.parse_measurement(row - 1, value, meters))
        except InvalidInput as exc:
            message = exc.message.replace(f"measurements[{row - 1}]", f"row {row}", 1)
            failures.append(FileUploadError(job_id=job_id, row=row, message=message))
    if good:
        ingest.store_batch(session, org_id, good)
    session.add_all(failures)
    job = must_get(session, FileUploadJob, job_id)
    job.total_rows = batch[-1][0]
    job.processed_rows += len(good)
    job.failed_rows += len(failures)
    job.modified_at = utcnow()
