"""Survey files: the definition model, loading and checking, skip logic, reading replies.

Typical use::

    from bot.surveys import load_survey_file, parse_answer

    survey = load_survey_file("examples/surveys/gp-access.toml")   # SurveyError if not valid
    question = survey.first_question({})
    value = parse_answer(question, "2", locale="en", yes_words=["yes"], no_words=["no"])
    question = survey.next_question(question.id, {question.id: value})
"""

from bot.surveys.answers import InvalidAnswer, normalise_reply, parse_answer, valid_replies
from bot.surveys.expr import Comparison, Expression, ExpressionError, compile_expression
from bot.surveys.loader import SurveyError, SurveyProblem, load_survey_file, parse_survey
from bot.surveys.model import (
    DEFAULT_MAX_LENGTH,
    YESNO_ANSWERS,
    Option,
    Question,
    QuestionType,
    Survey,
    pick,
)

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "YESNO_ANSWERS",
    "Comparison",
    "Expression",
    "ExpressionError",
    "InvalidAnswer",
    "Option",
    "Question",
    "QuestionType",
    "Survey",
    "SurveyError",
    "SurveyProblem",
    "compile_expression",
    "load_survey_file",
    "normalise_reply",
    "parse_answer",
    "parse_survey",
    "pick",
    "valid_replies",
]
