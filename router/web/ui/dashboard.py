"""The dashboard as one Litestar plugin: its routes (router.web.ui.handlers),
the template engine and the lifespan of the sampler (router.web.ui.history),
so create_app names it once. Without ROUTER_ADMIN_TOKEN nothing is added:
no route, no background task."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

import jinja2
from litestar.config.app import AppConfig
from litestar.plugins import InitPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig

from router.web.state import RouterState
from router.web.ui.handlers import ui_router
from router.web.ui.history import History, sampling

TEMPLATES = Path(__file__).parent / "templates"


class Dashboard(InitPlugin):
    def __init__(self, state: RouterState) -> None:
        self.state = state
        self.history = History()

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.append(ui_router(self.state, self.history))
        app_config.template_config = TemplateConfig(
            instance=JinjaTemplateEngine.from_environment(environment())
        )
        # After the app's own lifespan (listed first), so Redis is open
        # before the first sample and closed after the last.
        app_config.lifespan.append(self.sampler)
        return app_config

    def sampler(self, _app: object) -> AbstractAsyncContextManager[None]:
        return sampling(self.state, self.history)


def environment() -> jinja2.Environment:
    """Autoescaping on everything (bodies, keys and errors come from
    outside); an undefined name is an error, not an empty string."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def ui_plugins(state: RouterState) -> list[Dashboard]:
    """The dashboard when ROUTER_ADMIN_TOKEN is set, else nothing."""
    return [Dashboard(state)] if state.settings.admin_token else []
