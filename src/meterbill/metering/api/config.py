"""HTTP endpoints for the configuration resources: one set of five routes per resource."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from meterbill.core.db import utcnow
from meterbill.core.runtime import RuntimeDep, SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import config
from meterbill.metering.api import accounts as accounts_api
from meterbill.metering.auth import CallerDep
from meterbill.metering.config import RESOURCES, Resource
from meterbill.metering.listquery import ListQuery, list_params

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)
# First, so `accounts/search` is not taken for an id by the routes below.
router.include_router(accounts_api.router)

def page(resource: Resource, entities: list, next_token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": [config.render(e, resource) for e in entities]}
    if next_token:
        body["nextToken"] = next_token
    return body


def _add_routes(resource: Resource) -> None:
    # FastAPI reads the body's class from the annotation at runtime, so a variable is the point here.
    model = resource.body
    params = list_params(*resource.list_params)

    def create(
        caller: CallerDep, session: SessionDep, runtime: RuntimeDep,
        body: Annotated[model, Body()],  # type: ignore[valid-type]
    ) -> ExactJSONResponse:
        return ExactJSONResponse(config.render(config.create(session, caller, resource, body, runtime.vault), resource))

    def retrieve(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(config.render(config.get(session, caller.org_id, resource, id), resource))

    def update(
        id: str, caller: CallerDep, session: SessionDep, runtime: RuntimeDep,
        body: Annotated[model, Body()],  # type: ignore[valid-type]
    ) -> ExactJSONResponse:
        entity = config.update(session, caller, resource, id, body, runtime.vault)
        return ExactJSONResponse(config.render(entity, resource))

    def delete(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(config.render(config.delete(session, caller.org_id, resource, id), resource))

    def list_(caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, params.depends]) -> ExactJSONResponse:
        active_on = query.instant("date")
        if (active_on is None and any(query.values(p) for p in resource.active_now_with)
                and not query.flag("includeall")):
            active_on = utcnow()  # m3ter lists only what is active now unless includeall=true
        entities, token = config.list_page(
            session,
            caller.org_id,
            resource,
            ids=query.values("ids"),
            codes=query.values("codes"),
            filters={doc: values for param, doc in resource.list_filters.items() if (values := query.values(param))},
            via={join: values for param, join in resource.list_via.items() if (values := query.values(param))},
            page_size=query.page_size,
            next_token=query.next_token,
            active_on=active_on,
            # m3ter: archived=false leaves archived entities out; true (or no filter) lists them too.
            unarchived_only="archived" in resource.list_params and query.flag("archived") is False,
        )
        return ExactJSONResponse(page(resource, entities, token))

    label = resource.label
    base = f"/{resource.path}"
    router.add_api_route(base, create, methods=["POST"], summary=f"Create a {label}")
    router.add_api_route(base, list_, methods=["GET"], summary=f"List {label}s", openapi_extra=params.openapi)
    router.add_api_route(base + "/{id}", retrieve, methods=["GET"], summary=f"Retrieve a {label}")
    router.add_api_route(base + "/{id}", update, methods=["PUT"], summary=f"Update a {label}")
    router.add_api_route(base + "/{id}", delete, methods=["DELETE"], summary=f"Delete a {label}")


MAPPINGS_OF_ONE_ENTITY = list_params()


def _mapping_page(session, org_id: str, query: ListQuery, **document_equals: str):
    resource = RESOURCES["external_mapping"]
    entities, token = config.list_page(
        session,
        org_id,
        resource,
        filters={k: [v] for k, v in document_equals.items()},
        page_size=query.page_size,
        next_token=query.next_token,
    )
    return page(resource, entities, token)


@router.get(
    "/externalmappings/externalid/{system}/{externalTable}/{externalId}",
    summary="External mappings of one external entity",
    openapi_extra=MAPPINGS_OF_ONE_ENTITY.openapi,
)
def mappings_by_external_entity(
    system: str,
    externalTable: str,
    externalId: str,
    caller: CallerDep,
    session: SessionDep,
    query: Annotated[ListQuery, MAPPINGS_OF_ONE_ENTITY.depends],
) -> ExactJSONResponse:
    return ExactJSONResponse(
        _mapping_page(
            session, caller.org_id, query, externalSystem=system, externalTable=externalTable, externalId=externalId
        )
    )


@router.get(
    "/externalmappings/external/{entity}/{m3terId}",
    summary="External mappings of one m3ter entity",
    openapi_extra=MAPPINGS_OF_ONE_ENTITY.openapi,
)
def mappings_by_m3ter_entity(
    entity: str,
    m3terId: str,
    caller: CallerDep,
    session: SessionDep,
    query: Annotated[ListQuery, MAPPINGS_OF_ONE_ENTITY.depends],
) -> ExactJSONResponse:
    return ExactJSONResponse(_mapping_page(session, caller.org_id, query, m3terEntity=entity, m3terId=m3terId))


WEBHOOKS = RESOURCES["webhook"]
ACCOUNTS = RESOURCES["account"]
CHILDREN = list_params()


@router.put("/integrationdestinations/webhooks/{id}/active", summary="Switch a webhook destination on or off")
def set_webhook_active(
    id: str, active: Annotated[bool, Query()], caller: CallerDep, session: SessionDep
) -> ExactJSONResponse:
    return ExactJSONResponse(config.render(config.set_active(session, caller, WEBHOOKS, id, active), WEBHOOKS))


@router.get("/accounts/{id}/children", summary="The child accounts of an account", openapi_extra=CHILDREN.openapi)
def list_child_accounts(
    id: str, caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, CHILDREN.depends]
) -> ExactJSONResponse:
    config.get(session, caller.org_id, ACCOUNTS, id)
    entities, token = config.list_page(
        session, caller.org_id, ACCOUNTS, filters={"parentAccountId": [id]},
        page_size=query.page_size, next_token=query.next_token,
    )
    return ExactJSONResponse(page(ACCOUNTS, entities, token))


for _resource in RESOURCES.values():
    _add_routes(_resource)
