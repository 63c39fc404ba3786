"""panelbot: run an NHS citizens' panel over chat."""

__version__ = "0.1.0"
