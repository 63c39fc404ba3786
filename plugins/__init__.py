"""panelbot's built-in plugins.

Each sub-package is an ordinary pluggy plugin that uses only ``bot``'s public API
(``bot.hookspecs.hookimpl``, ``bot.models``, the ``Bot`` it is handed). They are declared
as entry points in the group ``panelbot.plugins`` in pyproject.toml, loaded exactly as a
third party's plugin is, and can be switched off with ``[plugins] disabled = [...]``.
"""
