"""panelbot's built-in plugins.

Each sub-package is an ordinary pluggy plugin that imports ``bot`` only through
``bot.plugin_api`` (``hookimpl``, the types hooks receive, message rendering, SMS measuring,
the transaction, command-line helpers), exactly as a third party's plugin should; ``make
lint`` (import-linter, contracts in pyproject.toml) fails when one reaches further into
``bot``. They are declared as entry points in the group ``panelbot.plugins`` in
pyproject.toml, loaded exactly as a third party's plugin is, and can be switched off with
``[plugins] disabled = [...]``.
"""
