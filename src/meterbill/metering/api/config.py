"""HTTP endpoints for the configuration resources: one set of five routes per resource."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from meterbill.core.errors import InvalidInput
from meterbill.core.runtime import RuntimeDep, SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import config, schemas
from meterbill.metering.auth import CallerDep
from meterbill.metering.config import RESOURCES, Resource

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)

PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=config.MAX_PAGE_SIZE)]
NextToken = Annotated[str | None, Query(alias="nextToken", max_length=64)]
PAGING = {"pageSize", "nextToken"}


def query_list(request: Request, name: str) -> list[str]:
    """m3ter SDKs send arrays comma-joined (`ids=a,b`); repeated parameters work too."""
    return [part for value in request.query_params.getlist(name) for part in value.split(",") if part]


def page(resource: Resource, entities: list, next_token: str | None) -> ExactJSONResponse:
    body: dict[str, Any] = {"data": [config.render(e, resource) for e in entities]}
    if next_token:
        body["nextToken"] = next_token
    return body


def _add_routes(resource: Resource) -> None:
    model = resource.body
    allowed_params = PAGING | {"ids", "codes"} | set(resource.list_filters) | ({"date"} if resource.dated else set())
    filter_docs = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in ("ids", "codes", *resource.list_filters)
    ]

    def create(
        caller: CallerDep, session: SessionDep, runtime: RuntimeDep, body: Annotated[model, Body()]
    ) -> ExactJSONResponse:
        return ExactJSONResponse(config.render(config.create(session, caller, resource, body, runtime.vault), resource))

    def retrieve(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(config.render(config.get(session, caller.org_id, resource, id), resource))

    def update(
        id: str, caller: CallerDep, session: SessionDep, runtime: RuntimeDep, body: Annotated[model, Body()]
    ) -> ExactJSONResponse:
        entity = config.update(session, caller, resource, id, body, runtime.vault)
        return ExactJSONResponse(config.render(entity, resource))

    def delete(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(config.render(config.delete(session, caller.org_id, resource, id), resource))

    def list_(
        request: Request,
        caller: CallerDep,
        session: SessionDep,
        page_size: PageSize = config.DEFAULT_PAGE_SIZE,
        next_token: NextToken = None,
    ) -> ExactJSONResponse:
        unknown = sorted(set(request.query_params) - allowed_params)
        if unknown:
            raise InvalidInput(f"unknown query parameter {unknown[0]}", param=unknown[0])
        filters = {doc: query_list(request, param) for param, doc in resource.list_filters.items()}
        active_on = None
        if "date" in request.query_params:
            try:
                active_on = schemas.utc_timestamp(request.query_params["date"])
            except ValueError as exc:
                raise InvalidInput(f"date: {exc}", param="date") from None
        entities, token = config.list_page(
            session,
            caller.org_id,
            resource,
            ids=query_list(request, "ids"),
            codes=query_list(request, "codes"),
            filters={k: v for k, v in filters.items() if v},
            page_size=page_size,
            next_token=next_token,
            active_on=active_on,
        )
        return ExactJSONResponse(page(resource, entities, token))

    label = resource.label
    base = f"/{resource.path}"
    router.add_api_route(base, create, methods=["POST"], summary=f"Create a {label}")
    router.add_api_route(
        base, list_, methods=["GET"], summary=f"List {label}s", openapi_extra={"parameters": filter_docs}
    )
    router.add_api_route(base + "/{id}", retrieve, methods=["GET"], summary=f"Retrieve a {label}")
    router.add_api_route(base + "/{id}", update, methods=["PUT"], summary=f"Update a {label}")
    router.add_api_route(base + "/{id}", delete, methods=["DELETE"], summary=f"Delete a {label}")


def _mapping_page(session, org_id: str, page_size: int, next_token: str | None, **document_equals: str):
    resource = RESOURCES["external_mapping"]
    entities, token = config.list_page(
        session,
        org_id,
        resource,
        filters={k: [v] for k, v in document_equals.items()},
        page_size=page_size,
        next_token=next_token,
    )
    return page(resource, entities, token)


@router.get(
    "/externalmappings/externalid/{system}/{externalTable}/{externalId}",
    summary="External mappings of one external entity",
)
def mappings_by_external_entity(
    system: str,
    externalTable: str,
    externalId: str,
    caller: CallerDep,
    session: SessionDep,
    page_size: PageSize = config.DEFAULT_PAGE_SIZE,
    next_token: NextToken = None,
) -> ExactJSONResponse:
    return ExactJSONResponse(
        _mapping_page(
            session,
            caller.org_id,
            page_size,
            next_token,
            externalSystem=system,
            externalTable=externalTable,
            externalId=externalId,
        )
    )


@router.get("/externalmappings/external/{entity}/{m3terId}", summary="External mappings of one m3ter entity")
def mappings_by_m3ter_entity(
    entity: str,
    m3terId: str,
    caller: CallerDep,
    session: SessionDep,
    page_size: PageSize = config.DEFAULT_PAGE_SIZE,
    next_token: NextToken = None,
) -> ExactJSONResponse:
    return ExactJSONResponse(
        _mapping_page(session, caller.org_id, page_size, next_token, m3terEntity=entity, m3terId=m3terId)
    )


for _resource in RESOURCES.values():
    _add_routes(_resource)
