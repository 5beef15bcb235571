"""/item_families, /items, /item_prices"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meterbill.billing import catalog, records
from meterbill.billing.api.common import envelope, handle, listing
from meterbill.billing.models import Item, ItemFamily, ItemPrice
from meterbill.core.errors import InvalidInput

router = APIRouter(prefix="/api/v2", tags=["billing"])


def _resource_routes(
    path: str, key: str, label: str, model: Any, render: Callable[[Any], dict[str, Any]],
    create: Callable, update: Callable, delete: Callable,
) -> None:
    async def create_endpoint(request: Request) -> JSONResponse:
        return await handle(request, lambda s, site, form: envelope(**{key: render(create(s, site, form))}))

    async def list_endpoint(request: Request) -> JSONResponse:
        def run(s, site, form):
            rows, offset = catalog.list_page(s, site, model, form)
            return listing([{key: render(r)} for r in rows], offset)

        return await handle(request, run)

    async def retrieve_endpoint(resource_id: str, request: Request) -> JSONResponse:
        def run(s, site, form):
            if form:
                raise InvalidInput(f"{next(iter(form))} : is not a parameter of this operation")
            return envelope(**{key: render(records.get(s, model, site, resource_id, label))})

        return await handle(request, run)

    async def update_endpoint(resource_id: str, request: Request) -> JSONResponse:
        return await handle(
            request, lambda s, site, form: envelope(**{key: render(update(s, site, resource_id, form))})
        )

    async def delete_endpoint(resource_id: str, request: Request) -> JSONResponse:
        return await handle(request, lambda s, site, form: envelope(**{key: render(delete(s, site, resource_id))}))

    router.add_api_route(f"/{path}", create_endpoint, methods=["POST"], summary=f"Create an {label.lower()}")
    router.add_api_route(f"/{path}", list_endpoint, methods=["GET"], summary=f"List {label.lower()}s")
    router.add_api_route(f"/{path}/{{resource_id}}", retrieve_endpoint, methods=["GET"],
                         summary=f"Retrieve an {label.lower()}")
    router.add_api_route(f"/{path}/{{resource_id}}", update_endpoint, methods=["POST"],
                         summary=f"Update an {label.lower()}")
    router.add_api_route(f"/{path}/{{resource_id}}/delete", delete_endpoint, methods=["POST"],
                         summary=f"Delete an {label.lower()}")


_resource_routes("item_families", "item_family", "Item family", ItemFamily, catalog.render_item_family,
                 catalog.create_item_family, catalog.update_item_family, catalog.delete_item_family)
_resource_routes("items", "item", "Item", Item, catalog.render_item,
                 catalog.create_item, catalog.update_item, catalog.delete_item)
_resource_routes("item_prices", "item_price", "Item price", ItemPrice, catalog.render_item_price,
                 catalog.create_item_price, catalog.update_item_price, catalog.delete_item_price)


@router.get("/item_prices/{resource_id}/applicable_items", summary="Addon items applicable to a plan item price")
async def find_applicable_items(resource_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = catalog.applicable_items(s, site, resource_id, form)
        return listing([{"item": catalog.render_item(row)} for row in rows], offset)

    return await handle(request, run)


@router.get("/item_prices/{resource_id}/applicable_item_prices",
            summary="Addon item prices applicable to a plan item price")
async def find_applicable_item_prices(resource_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = catalog.applicable_item_prices(s, site, resource_id, form)
        return listing([{"item_price": catalog.render_item_price(row)} for row in rows], offset)

    return await handle(request, run)
