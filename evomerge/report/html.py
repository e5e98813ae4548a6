"""The report as one HTML file that needs no network: CSS and JS inline, the data as a JSON blob the JS renders.

Member names, recipes and parameters are user data: they travel only inside the JSON blob (with `<`, `>` and `&`
escaped so that nothing in it can close its <script> tag) and the page puts them on screen with textContent, never
as markup. A Content-Security-Policy allows only the page's own script, by hash, and no request at all.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from typing import Any


def _asset(name: str) -> str:
    return resources.files("evomerge.report").joinpath("assets", name).read_text(encoding="utf-8")


def json_for_script(data: Any) -> str:
    """JSON that is safe inside <script type="application/json">: no `</script>`, no `<!--`, no entity."""
    text = json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_html(data: dict[str, Any]) -> str:
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"
    title = html.escape(f"evomerge report: {data['run']['name']}")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{title}</title>",
        f"<style>\n{_asset('report.css')}</style>",
        "</head>",
        "<body>",
        '<noscript>This report draws itself with JavaScript; open it in a browser with JavaScript on.</noscript>',
        '<div id="app"></div>',
        f'<script type="application/json" id="evomerge-data">{json_for_script(data)}</script>',
        f"<script>{script}</script>",
        "</body>",
        "</html>",
        "",
    ])
