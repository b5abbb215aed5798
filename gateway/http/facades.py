"""Facades: routes an adapter contributes so that a platform can speak its own protocol (e.g. NHSA transactions)
over the gateway's request-reply (README "Request-reply", "Facades").

An adapter names a factory in the entry point group `yrdx.facades` (entry point name = facade name; value =
`(ctx: FacadeContext) -> list[aiohttp.web.RouteDef]`). The gateway loads a facade only when a platform of its
config says `facade: <name>`, and mounts its routes under `/v1/facades/<name>/`. Every facade route is behind the
gateway's JWT check (the authenticate middleware), and a platform whose config does not name that facade is
refused there with 403 not_permitted, before the facade's own handler runs. `gateway` finds facades only through
entry points: it never imports adapters.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from gateway.audit.trail import AuditTrail
from gateway.config import GatewayConfig, Platform
from gateway.http.api import PRINCIPAL, Handler
from gateway.metrics import Metrics
from gateway.relay.requests import RequestReply
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.problems import Problem, ProblemError

ENTRY_POINT_GROUP = "yrdx.facades"
PREFIX = "/v1/facades"


class FacadeError(RuntimeError):
    """A facade a platform names cannot be loaded (no such entry point, or its factory failed)."""


@dataclass(frozen=True, slots=True)
class FacadeContext:
    """What a facade's factory gets: the request-reply API and the gateway's parts a facade may read."""

    name: str
    request_reply: RequestReply
    registry: SchemaRegistry
    region: str
    metrics: Metrics
    audit: AuditTrail
    cfg: GatewayConfig

    def platform(self, platform_id: str) -> Platform | None:
        return self.cfg.platform(platform_id)

    def authenticate_platform(self, request: web.Request) -> str:
        """The platform id of the caller (its JWT was checked, as on every platform route), which must be a
        platform configured for this facade; ProblemError otherwise."""
        principal = request.get(PRINCIPAL)
        platform = self.cfg.platform(principal.id) if principal is not None and principal.kind == "platform" else None
        if platform is None:
            raise ProblemError(Problem("forbidden", "only a platform may use this route"))
        if platform.facade != self.name:
            raise ProblemError(Problem("not_permitted", f"platform {platform.id} is not configured for the "
                                                        f"{self.name} facade"))
        return platform.id


Factory = Callable[[FacadeContext], list[web.RouteDef]]


def configured(cfg: GatewayConfig) -> list[str]:
    """The facades the config's platforms name, in config order."""
    return list(dict.fromkeys(p.facade for p in cfg.platforms if p.facade))


def load_factories(names: list[str]) -> dict[str, Factory]:
    found = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    factories: dict[str, Factory] = {}
    for name in names:
        if name not in found:
            raise FacadeError(f"facade {name!r}: no entry point of that name in the {ENTRY_POINT_GROUP} group")
        try:
            factories[name] = found[name].load()
        except Exception as e:
            raise FacadeError(f"facade {name!r}: cannot load {found[name].value}: {e}") from e
    return factories


def _guarded(ctx: FacadeContext, handler: Handler) -> Handler:
    async def facade_route(request: web.Request) -> web.StreamResponse:
        ctx.authenticate_platform(request)
        return await handler(request)

    return facade_route


def facade_routes(ctx: FacadeContext, factory: Factory) -> list[web.RouteDef]:
    """The factory's routes under /v1/facades/<name>/, each refusing a platform not configured for it."""
    routes = []
    for route in factory(ctx):
        if not isinstance(route, web.RouteDef) or not route.path.startswith("/"):
            raise FacadeError(f"facade {ctx.name!r}: routes must be aiohttp RouteDefs with paths starting with /")
        routes.append(web.RouteDef(route.method, f"{PREFIX}/{ctx.name}{route.path}", _guarded(ctx, route.handler),
                                   route.kwargs))
    return routes


def mount(cfg: GatewayConfig, contexts: Callable[[str], FacadeContext],
          factories: Mapping[str, Factory] | None = None) -> list[web.RouteDef]:
    """The routes of every facade the config names: `factories` given, or found through entry points."""
    names = configured(cfg)
    chosen = dict(factories) if factories is not None else load_factories(names)
    routes: list[web.RouteDef] = []
    for name in names:
        if name not in chosen:
            raise FacadeError(f"facade {name!r}: no factory")
        routes.extend(facade_routes(contexts(name), chosen[name]))
    return routes
