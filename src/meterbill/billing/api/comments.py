"""/comments"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meterbill.billing import comments
from meterbill.billing.api.common import envelope, handle, listing

router = APIRouter(prefix="/api/v2", tags=["billing"])


@router.post("/comments", summary="Add a comment to a customer, subscription, invoice, credit note or catalog entry")
async def create_comment(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(comment=comments.render(
        comments.create(s, site, form))))


@router.get("/comments", summary="List comments (newest first; by entity_type, entity_id, created_at)")
async def list_comments(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = comments.list_comments(s, site, form)
        return listing([{"comment": comments.render(r)} for r in rows], offset)

    return await handle(request, run)


@router.get("/comments/{comment_id}", summary="Retrieve a comment")
async def retrieve_comment(comment_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(comment=comments.render(
        comments.retrieve(s, site, comment_id, form))))


@router.post("/comments/{comment_id}/delete", summary="Delete a comment")
async def delete_comment(comment_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(comment=comments.delete(s, site, comment_id, form)))
