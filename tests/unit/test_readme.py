"""The README's plugin example: its pyproject.toml is complete. (Its module
run as written, a message delivered through it: tests/integration/test_readme.py.)"""

from __future__ import annotations

import re
import tomllib

from tests.support import ROOT

README = ROOT / "README.md"


def readme_blocks(language: str) -> list[str]:
    """The `language` code blocks of the README's plugin section."""
    text = README.read_text()
    section = text[text.index("## Writing a delivery plugin") : text.index("## Operating it")]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_the_plugin_pyproject_is_complete() -> None:
    (toml,) = readme_blocks("toml")
    project = tomllib.loads(toml)
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert "message-router" in project["project"]["dependencies"]
    assert project["project"]["entry-points"]["router"] == {"sms": "my_sms_plugin"}


def test_every_routes_yaml_setting_is_in_the_readme() -> None:
    """datasette's test_settings_are_documented, for routes.yaml: every
    field the router reads from a route, a destination or a retry policy
    is shown in the README's routes.yaml section."""
    from router.config import DestinationSettings, RetryPolicy, RouteSettings

    text = README.read_text()
    section = text[text.index("## routes.yaml") : text.index("## The ingest API")]
    for struct in (RouteSettings, DestinationSettings, RetryPolicy):
        for name in struct.__struct_fields__:
            assert re.search(rf"\b{name}:", section), f"{struct.__name__}.{name} is not documented"
