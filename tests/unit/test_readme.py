"""The README's routes.yaml section shows every setting. (The plugin
guide's examples, which were the README's: tests/unit/test_plugin_api.py.)"""

from __future__ import annotations

import re

from tests.support import ROOT

README = ROOT / "README.md"


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
