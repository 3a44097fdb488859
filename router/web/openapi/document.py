"""The API documents: the OpenAPI document and the docs page.

`GET /schema/openapi.json` (and `.yaml`) is the OpenAPI 3.1 document,
`GET /schema` (and `/schema/swagger`) the docs page: Swagger UI, loaded from
files shipped inside this package (router/web/static/swagger-ui), so the page
works without internet access.

This module assembles the document: its description, tags and security
schemes, and where it and its page are served. What each operation says
comes from the Operation class its handler names (`operation_class=`):
router/web/openapi/ingest.py for the ingest routes (the body each requires,
from routes.yaml, the headers it honours, every answer it can give with its
JSON body: router/web/openapi/ingest_answers.py), router/web/openapi/health.py for the
health endpoints, router/web/openapi/admin.py for the admin API (whose 200
answers Litestar derives from router/web/admin_types.py); their common
parts are router/web/openapi/parts.py.

Decisions:
- The document is built once per app, from the routes.yaml it serves, and
  holds no secret: route auth is described by header name, never by value.
- The admin endpoints are in the document only when ROUTER_ADMIN_TOKEN is
  set, because only then do they exist (router/web/admin.py); documenting
  them opens nothing.
- A 500 ("internal error") is a bug, not an answer: the document's
  description names it once instead of every operation listing it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from litestar import Request
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.router import Router
from litestar.static_files import create_static_files_router

from router.config import Config
from router.http.auth import Authenticator
from router.web.openapi.admin import ADMIN_SCHEME
from router.web.openapi.ingest import token_scheme_name

TITLE = "message-router"
VERSION = "0.1.0"
DOCS_PATH = "/schema"  # the docs page; the documents are below it

# The docs page's assets, shipped in the package (see its README.md).
SWAGGER_UI_VERSION = "5.35.0"
ASSETS_DIR = Path(__file__).parent.parent / "static" / "swagger-ui"
ASSETS_PATH = f"{DOCS_PATH}/static/swagger-ui"

# -- the document and the docs page -------------------------------------------

_DESCRIPTION = """\
A webhook POSTs JSON messages to the ingest routes (from routes.yaml); the router \
stores each in Redis before it answers, and delivers them to their destinations in \
order per ordering key.

Every error body is JSON, `{"status": "error", "error": "<what is wrong>"}` (plus \
`stored` on a 503 of an ingest route), the HTTP server's own answers to malformed \
requests included. Any endpoint may also answer 500 `{"status": "error", "error": \
"internal error"}`: that is a bug, logged with its traceback. An unknown path \
answers 404, a wrong method 405.

The admin endpoints exist only when ROUTER_ADMIN_TOKEN is set, and need \
`Authorization: Bearer <ROUTER_ADMIN_TOKEN>`."""


def openapi_config(config: Config, admin: bool) -> OpenAPIConfig:
    """The app's OpenAPI configuration: the document's components (security
    schemes), its docs page and where both are served. `admin`: whether the
    admin endpoints exist (ROUTER_ADMIN_TOKEN is set)."""
    schemes: dict[str, Any] = {}
    if admin:
        schemes[ADMIN_SCHEME] = SecurityScheme(
            type="http",
            scheme="bearer",
            description="The value of ROUTER_ADMIN_TOKEN.",
        )
    for route in config.routes:
        auth = route.settings.auth
        if auth is not None and auth.type == "header":
            header = Authenticator(auth).header_label
            schemes[token_scheme_name(header)] = SecurityScheme(
                type="apiKey",
                name=header,
                security_scheme_in="header",
                description=f"The secret of a route with auth type header, in {header}.",
            )
    tags = [
        Tag(name="ingest", description="The routes of routes.yaml: one message per POST."),
        Tag(name="health", description="For load balancers and orchestrators."),
    ]
    if admin:
        tags.append(Tag(name="admin", description="Queues, dead letters, blocked keys."))
    return OpenAPIConfig(
        title=TITLE,
        version=VERSION,
        description=_DESCRIPTION,
        path=DOCS_PATH,
        tags=tags,
        components=Components(security_schemes=schemes or None),
        render_plugins=[DocsPage(), JsonRenderPlugin(), YamlRenderPlugin()],
    )


class DocsPage(OpenAPIRenderPlugin):
    """Swagger UI at /schema (and /schema/swagger), from the package's own
    copy: the page references only the router's own URLs."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/swagger"], favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        spec_url = json.dumps(self.get_openapi_json_route(request))
        title = openapi_schema["info"]["title"]
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API</title>
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<style>body {{ margin: 0 }}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: {spec_url},
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}});
</script>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        # Below the docs path: /schema and everything below it is the
        # router's own (config.RESERVED_PATHS).
        router.register(
            create_static_files_router(
                ASSETS_PATH.removeprefix(DOCS_PATH),
                directories=[ASSETS_DIR],
                name="docs-assets",
                include_in_schema=False,
            )
        )
