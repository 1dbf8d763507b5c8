"""The argument parser every console script uses: a command-line error is one line on stderr
(exit 2), like every other error of our commands, instead of argparse's usage block.

Flags go before the trailing ``KEY VALUE`` overrides (``opmask.cli.flags.add_overrides``): those
take every word after the first override, so a flag written after them would silently become an
override. The parser refuses that in one line instead, for every command that has overrides.
"""

from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    _argv_seen: list[str] = []  # the words of the last parse (to explain a missing flag)

    def error(self, message: str):
        late = self._swallowed_required()
        if late is not None and message.startswith("the following arguments are required"):
            message = _late_flag_message(late)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        self._argv_seen = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        for action in self._trailing():
            late = next(filter(self._is_flag, getattr(parsed, action.dest, None) or []), None)
            if late is not None:
                self.error(_late_flag_message(late))
        return parsed, extras

    def _trailing(self) -> list[argparse.Action]:
        """The positional arguments that take every remaining word (the overrides)."""
        return [a for a in self._actions if a.nargs == argparse.REMAINDER]

    def _is_flag(self, word: str) -> bool:
        """``--name`` / ``--name=value`` (any long flag) or one of this parser's own flags."""
        return (word.startswith("--") and len(word) > 2) or word in self._option_string_actions

    def _swallowed_required(self) -> str | None:
        """A required flag that was written but not seen: the overrides took it. None when the
        parser takes no overrides."""
        if not self._trailing():
            return None
        for action in self._actions:
            if action.required and action.option_strings:
                for word in self._argv_seen:
                    if word.split("=", 1)[0] in action.option_strings:
                        return word
        return None


def _late_flag_message(flag: str) -> str:
    return (
        f"{flag.split('=', 1)[0]} comes after the KEY VALUE overrides, where it would be read as "
        "one; put every flag before the overrides"
    )
