"""Survey versions by row id, read once: versions never change, so they are cached."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.storage import surveys as survey_store

if TYPE_CHECKING:
    from bot.storage.conn import ReadConn
    from bot.surveys.model import Survey


class SurveyCache:
    """The engine's survey versions, shared with the survey runner and the waves."""

    def __init__(self) -> None:
        self._surveys: dict[int, Survey] = {}
        self._conditional_after: dict[int, dict[str, bool]] = {}

    async def get(self, conn: ReadConn, row_id: int) -> Survey:
        """A survey version's definition (read through ``conn`` the first time)."""
        survey = self._surveys.get(row_id)
        if survey is None:
            stored = await survey_store.by_row_id(conn, row_id)
            if stored is None:
                raise LookupError(f"survey row {row_id} is missing")
            survey = self._surveys[row_id] = stored.survey
        return survey

    def needs_answers_after(self, row_id: int, question_id: str) -> bool:
        """Whether a question after this one has skip logic (so earlier answers are needed).

        The survey version must have been read with :meth:`get` first."""
        table = self._conditional_after.get(row_id)
        if table is None:
            survey = self._surveys[row_id]
            table, later = {}, False
            for q in reversed(survey.questions):
                table[q.id] = later
                later = later or q.condition is not None
            self._conditional_after[row_id] = table
        return table.get(question_id, True)
