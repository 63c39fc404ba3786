"""``GET /impact``: the public "you said, we did" register.

Off unless ``[plugins.impact_updates] public_page = true`` (the route does not exist then,
so the path is a 404). Server-rendered from our own template with every value escaped; in
each language the panel speaks (``?lang=cy``, else the browser's Accept-Language, else
the panel's default), with links to switch; decided and implemented decisions only, with
counts and no personal data. Marked public (``public_route``): no staff login in front.
The page carries its own Content-Security-Policy: nothing loads from anywhere, and the
one inline style block is allowed by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from starlette.responses import HTMLResponse

from bot.plugin_api import Route, language_name, public_route
from plugins.impact_updates.report import TEMPLATES, environment, register
from plugins.impact_updates.settings import impact_settings

if TYPE_CHECKING:
    from starlette.requests import Request

    from bot.plugin_api import Bot

RTL = {"ar", "fa", "he", "ps", "ur", "yi"}
STYLE = (
    "body{font-family:Arial,Helvetica,sans-serif;color:#212b32;margin:0 auto;max-width:48rem;"
    "padding:1rem;line-height:1.5;overflow-wrap:anywhere}"
    "a{color:#005eb8}a:focus{outline:3px solid #ffeb3b;background:#ffeb3b;color:#212b32}"
    "h2{border-top:4px solid #005eb8;padding-top:.75rem;margin-top:2rem}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}"
    "dt{font-weight:bold}dd{margin:0}"
    "blockquote{margin:0;padding-inline-start:.75rem;border-inline-start:4px solid #768692}"
    ".langs{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1rem}"
    "@media (max-width:36rem){dl{display:block}dd{margin-bottom:.5rem}}"
    ".visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;"
    "clip:rect(0 0 0 0);white-space:nowrap}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


@lru_cache(maxsize=1)
def strings() -> dict[str, dict[str, str]]:
    return tomllib.loads((TEMPLATES / "public_strings.toml").read_text(encoding="utf-8"))


def page_locales(bot: Bot) -> list[str]:
    """The panel's languages that the page has words for, the default first."""
    known = strings()
    found = [code for code in bot.locales if code in known]
    return found or ["en"]


def choose_locale(bot: Bot, asked: str | None, accept_language: str | None) -> str:
    """``?lang=`` when the page speaks it, else the best of Accept-Language, else default."""
    offered = page_locales(bot)
    if asked and asked in offered:
        return asked
    for tag, _ in _accept_language(accept_language or ""):
        for code in (tag, tag.split("-")[0]):
            if code in offered:
                return code
    return offered[0]


def _accept_language(header: str) -> list[tuple[str, float]]:
    """Accept-Language as (tag, q) pairs, best first; malformed parts are skipped."""
    pairs: list[tuple[str, float]] = []
    for part in header.split(",")[:20]:
        bits = part.strip().split(";")
        tag = bits[0].strip().lower()
        if not tag or len(tag) > 35 or tag == "*":
            continue
        q = 1.0
        for bit in bits[1:]:
            key, _, value = bit.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            pairs.append((tag, q))
    return sorted(pairs, key=lambda pair: -pair[1])


def quote(finding: dict[str, Any], words: dict[str, str]) -> str:
    """A finding in the page's language: "62% of you said “Very hard” (n=412)"."""
    if not finding.get("option") or not finding.get("n"):
        return str(finding["quote"])
    percent = round(100 * float(finding["share"]))
    return words["finding"].format(percent=percent, option=finding["option"], n=finding["n"])


def render_page(bot: Bot, decisions: list[dict[str, Any]], lang: str) -> str:
    words = strings()
    t = {**words["en"], **words.get(lang, {})}
    languages = [(code, language_name(code)) for code in page_locales(bot)]
    return (
        environment()
        .get_template("public.html.j2")
        .render(
            decisions=decisions,
            lang=lang,
            direction="rtl" if lang.split("-")[0] in RTL else "ltr",
            t=t,
            languages=languages,
            panel_name=bot.settings.bot.name,
            style=STYLE,
            quote=lambda finding: quote(finding, t),
        )
    )


def routes(bot: Bot) -> list[Any] | None:
    """The route, when the page is switched on; None (no route: 404) otherwise."""
    if not impact_settings(bot.settings).public_page:
        return None

    async def impact_page(request: Request) -> HTMLResponse:
        lang = choose_locale(
            bot, request.query_params.get("lang"), request.headers.get("accept-language")
        )
        decisions = await register(bot, public=True)
        html = render_page(bot, decisions, lang)
        return HTMLResponse(
            html,
            headers={
                "Content-Security-Policy": CSP,
                "Content-Language": lang,
                "Vary": "Accept-Language",
                "Cache-Control": "public, max-age=300",
            },
        )

    return [public_route(Route("/impact", impact_page, methods=["GET"]))]
