"""Survey review links: a stakeholder tries a draft survey in a sandbox and comments on it.

``panelbot survey share ID`` (or the button on the dashboard's survey page) makes a link,
``<public_base_url>/review/<token>``. Whoever holds it, with no account, sees the survey's
latest version (the draft: what ``survey add`` stored last, launched or not) in any panel
language, every message with its SMS encoding, segments and cost, and a comment box per
question, and can try it as a panellist would.

The sandbox never touches the engine's tables: answers are parsed and skip logic followed
here, in memory, and the conversation so far travels in the page itself, signed so that a
changed copy is refused. The only rows a reviewer can write are comments (capped in length,
rate-limited per link). An unknown token is a 404, a revoked or expired one a 410.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import jinja2
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.engine import render
from bot.models import iso
from bot.sms import encode_info
from bot.storage import audit
from bot.storage import shares as share_store
from bot.storage import surveys as survey_store
from bot.surveys.answers import InvalidAnswer, parse_answer, valid_replies
from bot.surveys.model import Survey

if TYPE_CHECKING:
    from bot.app import Bot

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
# The page loads only its own stylesheet; no script at all.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex",
}
MAX_REPLY = 1600
MAX_TRANSCRIPT = 80  # messages kept in the sandbox's conversation
# The signed state travels in the page's form, and the form must fit the server's 64 KB
# body cap (bot/web/limits.py) with a reply of MAX_REPLY characters percent-encoded (up to
# 12 bytes each): the oldest messages are dropped to keep the state under this many bytes.
STATE_BUDGET = 40 * 1024


def base_url(bot: Bot) -> str:
    """Where links point: ``bot.public_base_url``, else this server's own address."""
    if bot.settings.bot.public_base_url:
        return bot.settings.bot.public_base_url.rstrip("/")
    web = bot.settings.web
    host = f"[{web.host}]" if ":" in web.host else web.host
    return f"http://{host}:{web.port}"


async def make_share(
    bot: Bot, survey_id: str, expires_in: timedelta, *, label: str | None, actor: str
) -> tuple[str, int, str]:
    """A new review link for ``survey_id``: (the link, its id, when it expires in UTC).

    :class:`~bot.storage.shares.ShareError` when there is no such survey or the label is
    too long."""
    if label is not None:
        label = label.strip() or None
    if await survey_store.latest_version(bot.db.conn, survey_id) is None:
        raise share_store.ShareError(f"no survey {survey_id!r}")
    async with bot.db.transaction() as conn:
        share, token = await share_store.create(
            conn, survey_id, expires_in=expires_in, created_by=actor, label=label
        )
        await audit.record(
            conn,
            "survey_shared",
            detail={"survey": survey_id, "link": share.id, "expires_at": iso(share.expires_at)},
            actor=actor,
        )
    until = share.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"{base_url(bot)}/review/{token}", share.id, until


async def revoke_share(bot: Bot, survey_id: str, share_id: int, *, actor: str) -> None:
    """Revoke link ``share_id`` of ``survey_id``; ``ShareError`` when there is none."""
    async with bot.db.transaction() as conn:
        share = await share_store.get(conn, share_id)
        if share is None or share.survey_id != survey_id:
            raise share_store.ShareError(f"no link {share_id} for survey {survey_id!r}")
        if not await share_store.revoke(conn, share_id):
            raise share_store.ShareError(f"link {share_id} was revoked already")
        await audit.record(
            conn,
            "survey_share_revoked",
            detail={"survey": survey_id, "link": share_id},
            actor=actor,
        )


# --- the sandbox -------------------------------------------------------------------------


def _price(bot: Bot) -> float:
    return float(bot.settings.channels.twilio.sms_price_per_segment)


def sms_line(bot: Bot, text: str) -> dict[str, Any]:
    """What the message costs as SMS, for the page."""
    info = encode_info(text)
    return {
        "encoding": info.encoding,
        "segments": info.segments,
        "characters": info.characters,
        "cost": f"£{info.cost(_price(bot)):.4f}".rstrip("0").rstrip("."),
        "over_cap": info.over_cap,
        "non_gsm": "".join(info.non_gsm),
    }


class Sandbox:
    """One survey version played in memory, in one locale, for a reviewer."""

    def __init__(self, bot: Bot, survey: Survey, locale: str) -> None:
        self.bot = bot
        self.survey = survey
        self.locale = locale
        self.renderer = render.Renderer(bot.messages, bot.settings)
        self.fallback = bot.settings.bot.default_locale

    def question_text(self, qid: str, *, reask: bool = False, skipped: bool = False) -> str:
        question = self.survey.question(qid)
        hint = ", ".join(valid_replies(question, self.locale, self.fallback)) if reask else ""
        return render.question_message(
            self.renderer.catalog,
            self.survey,
            question,
            self.locale,
            fallback=self.fallback,
            reask=reask,
            skipped=skipped,
            valid_replies=hint,
        ).text

    def invitation(self) -> str:
        first = self.survey.first_question({})
        return self.renderer.render(
            "invitation",
            self.locale,
            intro=self.survey.localized_intro(self.locale, self.fallback),
            # A survey whose every question is conditional asks nothing at first.
            question=self.question_text(first.id) if first else "",
            title=self.survey.localized_title(self.locale, self.fallback),
            questions=len(self.survey.questions),
            closes_at=datetime.now(UTC) + timedelta(days=14),
        )

    def start(self) -> dict[str, Any]:
        first = self.survey.first_question({})
        return {
            "current": first.id if first else None,
            "answers": {},
            "misses": 0,
            "log": [["bot", self.invitation()]],
        }

    def reply(self, state: dict[str, Any], text: str) -> dict[str, Any]:
        """The state after the reviewer sends ``text``: re-ask once, then skip, as the
        survey runner does; the thanks message at the end."""
        log: list[list[str]] = state["log"]
        log.append(["you", text])
        qid = state["current"]
        if qid is None:
            log.append(["bot", "(The survey is over: start again to try another path.)"])
            return state
        question = self.survey.question(qid)
        yes, no, and_words = self.renderer.answer_words(self.locale)
        answered = True
        try:
            value = parse_answer(
                question,
                text,
                locale=self.locale,
                fallback_locale=self.fallback,
                yes_words=yes,
                no_words=no,
                and_words=and_words,
            )
        except InvalidAnswer:
            if state["misses"] == 0:
                state["misses"] = 1
                log.append(["bot", self.question_text(qid, reask=True)])
                return state
            answered = False
            value = None
        if answered:
            state["answers"][qid] = value
        state["misses"] = 0
        following = self.survey.next_question(qid, state["answers"])
        if following is None:
            state["current"] = None
            thanks = self.survey.localized_thanks(self.locale, self.fallback)
            log.append(["bot", self.renderer.render("survey_complete", self.locale, thanks=thanks)])
        else:
            state["current"] = following.id
            log.append(["bot", self.question_text(following.id, skipped=not answered)])
        del log[:-MAX_TRANSCRIPT]
        return state


def _serializer(bot: Bot, share_id: int, locale: str, version: int) -> URLSafeSerializer:
    # Bound to this link, language and survey version: a state from elsewhere is refused.
    return URLSafeSerializer(bot.hash_key, salt=f"review-try:{share_id}:{locale}:{version}")


def _bounded_state(serializer: URLSafeSerializer, state: dict[str, Any]) -> str:
    """The signed state, at most STATE_BUDGET bytes: the oldest messages of the transcript
    are dropped first; if that is not enough (long free-text answers), long texts are cut,
    which changes no path through the survey (an answer given stays given)."""
    signed = serializer.dumps(state)
    log: list[list[str]] = state["log"]
    while len(signed) > STATE_BUDGET and len(log) > 1:
        del log[: max(1, len(log) // 8)]
        signed = serializer.dumps(state)
    if len(signed) > STATE_BUDGET:
        state["log"] = [[who, text[:200]] for who, text in log]
        state["answers"] = {
            qid: value[:100] if isinstance(value, str) else value
            for qid, value in state["answers"].items()
        }
        signed = serializer.dumps(state)
    return signed


def _page(name: str, status_code: int = 200, **context: Any) -> Response:
    html = _env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def _gone(message: str, status_code: int) -> Response:
    return _page("review_gone.html", status_code=status_code, message=message)


async def _open(request: Request) -> tuple[Bot, share_store.Share, Any] | Response:
    """The link, its survey's latest version, or the 404/410 page."""
    bot: Bot = request.app.state.bot
    token = request.path_params["token"]
    share = await share_store.find(bot.db.conn, token)
    if share is None:
        return _gone("This review link does not exist. Check that it was copied whole.", 404)
    if share.revoked_at is not None:
        return _gone("This review link has been withdrawn by the panel team.", 410)
    if not share.usable():
        return _gone("This review link has expired. Ask the panel team for a new one.", 410)
    stored = await survey_store.latest_version(bot.db.conn, share.survey_id)
    if stored is None:
        return _gone("The survey this link was for no longer exists.", 410)
    return bot, share, stored


def _locale(bot: Bot, wanted: str | None) -> str:
    return wanted if wanted in bot.locales else bot.settings.bot.default_locale


async def _render_review(
    request: Request,
    bot: Bot,
    share: share_store.Share,
    stored: Any,
    locale: str,
    state: dict[str, Any] | None,
    *,
    notice: str = "",
    error: str = "",
    status_code: int = 200,
) -> Response:
    survey: Survey = stored.survey
    sandbox = Sandbox(bot, survey, locale)
    if state is None:
        state = sandbox.start()
    signed = _bounded_state(_serializer(bot, share.id, locale, stored.version), state)
    transcript = [
        {"who": who, "text": text, "sms": sms_line(bot, text) if who == "bot" else None}
        for who, text in state["log"]
    ]
    questions = []
    for number, q in enumerate(survey.questions, 1):
        text = sandbox.question_text(q.id)
        questions.append(
            {
                "id": q.id,
                "number": number,
                "type": q.type.value,
                "when": q.when,
                "text": text,
                "sms": sms_line(bot, text),
            }
        )
    invitation = sandbox.invitation()
    comments = await share_store.comments_of_share(bot.db.conn, share.id)
    return _page(
        "review.html",
        status_code=status_code,
        token=request.path_params["token"],
        share=share,
        survey=survey,
        version=stored.version,
        title=survey.localized_title(locale, bot.settings.bot.default_locale),
        locale=locale,
        locales=[(code, render.language_name(code)) for code in bot.locales],
        translated=locale in survey.locales,
        transcript=transcript,
        finished=state["current"] is None,
        state=signed,
        invitation={"text": invitation, "sms": sms_line(bot, invitation)},
        questions=questions,
        comments=comments,
        notice=notice,
        error=error,
        max_body=share_store.MAX_BODY,
        max_reviewer=share_store.MAX_REVIEWER,
        max_reply=MAX_REPLY,
        panel_name=bot.settings.bot.name,
    )


async def review_page(request: Request) -> Response:
    """``GET /review/<token>``: the draft, its messages and the comment boxes."""
    opened = await _open(request)
    if isinstance(opened, Response):
        return opened
    bot, share, stored = opened
    locale = _locale(bot, request.query_params.get("locale"))
    notice = "Thank you: your comment was saved." if request.query_params.get("sent") else ""
    return await _render_review(request, bot, share, stored, locale, None, notice=notice)


async def read_form(request: Request, max_bytes: int = 256 * 1024) -> dict[str, str] | None:
    """A URL-encoded form's fields (the last value of each), or None when the body is not
    one (another content type, too big, not UTF-8, too many fields): the caller answers 400.

    Parsed here rather than by Starlette, whose form parser needs python-multipart."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = await request.body()
    if len(body) > max_bytes:
        return None
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=30)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


async def try_reply(request: Request) -> Response:
    """``POST /review/<token>/try``: one reply in the sandbox; nothing is stored."""
    opened = await _open(request)
    if isinstance(opened, Response):
        return opened
    bot, share, stored = opened
    form = await read_form(request)
    if form is None:
        return _gone("That form could not be read.", 400)
    locale = _locale(bot, str(form.get("locale") or ""))
    if form.get("restart"):
        return await _render_review(request, bot, share, stored, locale, None)
    try:
        state = _serializer(bot, share.id, locale, stored.version).loads(str(form.get("state")))
    except BadSignature:
        # A page from before the survey changed (or a changed copy): start afresh.
        return await _render_review(
            request,
            bot,
            share,
            stored,
            locale,
            None,
            error="The survey changed since this page was opened, so the trial starts again.",
        )
    text = str(form.get("reply") or "").strip()
    if not text:
        return await _render_review(
            request, bot, share, stored, locale, state, error="Type a reply first."
        )
    if len(text) > MAX_REPLY:
        return await _render_review(
            request,
            bot,
            share,
            stored,
            locale,
            state,
            error=f"A reply has at most {MAX_REPLY} characters.",
            status_code=400,
        )
    state = Sandbox(bot, stored.survey, locale).reply(state, text)
    return await _render_review(request, bot, share, stored, locale, state)


async def add_comment(request: Request) -> Response:
    """``POST /review/<token>/comments``: store a comment on one question (or the whole)."""
    opened = await _open(request)
    if isinstance(opened, Response):
        return opened
    bot, share, stored = opened
    form = await read_form(request)
    if form is None:
        return _gone("That form could not be read.", 400)
    locale = _locale(bot, str(form.get("locale") or ""))
    qid = str(form.get("question_id") or "") or None
    if qid is not None and qid not in {q.id for q in stored.survey.questions}:
        return await _render_review(
            request, bot, share, stored, locale, None, error="No such question.", status_code=400
        )
    try:
        async with bot.db.transaction() as conn:
            await share_store.add_comment(
                conn,
                share,
                question_id=qid,
                locale=locale,
                reviewer=str(form.get("reviewer") or ""),
                body=str(form.get("body") or ""),
            )
    except share_store.ShareError as exc:
        status = 429 if "too many" in str(exc) or "taken its" in str(exc) else 400
        return await _render_review(
            request, bot, share, stored, locale, None, error=str(exc), status_code=status
        )
    anchor = f"#q-{qid}" if qid else "#general"
    return RedirectResponse(
        f"/review/{request.path_params['token']}?locale={locale}&sent=1{anchor}", status_code=303
    )


async def stylesheet(request: Request) -> Response:
    return FileResponse(
        HERE / "review.css",
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def routes() -> list[BaseRoute]:
    """Public by design: every route needs a valid, unexpired, unrevoked token."""
    return [
        Route("/review/review.css", stylesheet, methods=["GET"]),
        Route("/review/{token}", review_page, methods=["GET"]),
        Route("/review/{token}/try", try_reply, methods=["POST"]),
        Route("/review/{token}/comments", add_comment, methods=["POST"]),
    ]
