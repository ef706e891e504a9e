"""Command-line helpers shared by the ``python -m sdsd...`` tools."""

from __future__ import annotations

import argparse

from sdsd.errors import UserError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and appends each real default (not ``None``/``False``) to its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is not None and action.default is not False and action.default is not argparse.SUPPRESS:
            text += " (default: %(default)s)"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """Argument errors become one-line :class:`UserError` messages (exit status 2 via ``cli_main``)."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")
