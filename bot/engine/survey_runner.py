"""The survey runner: one question per message, re-ask once, skip logic, thanks at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.engine import render, waves
from bot.storage import surveys as survey_store
from bot.surveys.answers import InvalidAnswer, parse_answer, valid_replies
from bot.surveys.model import Survey

if TYPE_CHECKING:
    from bot.engine.conversation import Engine, Turn

_NO_ANSWER = object()


async def handle_answer(engine: Engine, turn: Turn) -> None:
    p = turn.panellist
    assert p is not None
    conn = turn.conn
    session = turn.session
    if session is None:
        last = await survey_store.latest_session(conn, p.id)
        name = "survey_closed" if last and last.state == "closed" else "no_survey"
        turn.reply(engine.render(name, p.locale), template=name)
        return
    survey = await engine.survey(conn, session.survey_row_id)
    question = survey.question(session.current_question) if session.current_question else None
    if question is None:  # defensive: a session pointing nowhere ends cleanly
        await _complete(engine, turn, session, survey)
        return
    locale = p.locale or engine.default_locale
    yes_words, no_words, and_words = engine.renderer.answer_words(locale)
    try:
        value: Any = parse_answer(
            question,
            turn.text,
            locale=locale,
            fallback_locale=engine.default_locale,
            yes_words=yes_words,
            no_words=no_words,
            and_words=and_words,
        )
    except InvalidAnswer:
        if session.misses == 0:
            await survey_store.count_miss(conn, session.id)
            hint = ", ".join(valid_replies(question, locale, engine.default_locale))
            msg = render.question_message(
                engine.catalog,
                survey,
                question,
                locale,
                fallback=engine.default_locale,
                reask=True,
                valid_replies=hint,
            )
            turn.reply(msg.text, template=msg.template, extra=msg.extra)
            return
        value = _NO_ANSWER
    answered = value is not _NO_ANSWER
    if answered:
        await survey_store.record_answer(conn, session, question.id, value)
    answers: dict[str, Any] = {}
    if engine.surveys.needs_answers_after(session.survey_row_id, question.id):
        answers = await survey_store.session_answers(conn, session.id)
    following = survey.next_question(question.id, answers)
    if following is None:
        await survey_store.advance_session(conn, session.id, question=None, answered=answered)
        await _complete(engine, turn, session, survey)
        return
    await survey_store.advance_session(conn, session.id, question=following.id, answered=answered)
    msg = engine.renderer.question(
        session.survey_row_id, survey, following, locale, skipped=not answered
    )
    turn.reply(msg.text, template=msg.template, extra=msg.extra)


async def _complete(
    engine: Engine, turn: Turn, session: survey_store.Session, survey: Survey
) -> None:
    p = turn.panellist
    assert p is not None
    conn = turn.conn
    await survey_store.finish_session(conn, session.id, "completed")
    await survey_store.set_invitation(conn, session.wave_id, p.id, "completed")
    thanks = survey.localized_thanks(p.locale, engine.default_locale)
    turn.reply(
        engine.render("survey_complete", p.locale, thanks=thanks), template="survey_complete"
    )
    answers = await survey_store.session_answers(conn, session.id)
    turn.completed.append((p, survey, answers))
    await waves.start_next_waiting(engine, turn)


async def resend_current(engine: Engine, turn: Turn, *, quiet: bool = False) -> None:
    """Repeat the open question (after a language change or a new chat was linked).

    With nothing open, say so, unless ``quiet``.
    """
    p = turn.panellist
    assert p is not None
    session = await survey_store.active_session(turn.conn, p.id)
    if session is None or not session.current_question:
        if not quiet:
            turn.reply(engine.render("language_changed", p.locale), template="language_changed")
        return
    survey = await engine.survey(turn.conn, session.survey_row_id)
    question = survey.question(session.current_question)
    msg = render.question_message(
        engine.catalog, survey, question, p.locale, fallback=engine.default_locale
    )
    turn.reply(msg.text, template=msg.template, extra=msg.extra)
