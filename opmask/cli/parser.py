"""The argument parser every console script uses: a command-line error is one line on stderr
(exit 2), like every other error of our commands, instead of argparse's usage block."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
