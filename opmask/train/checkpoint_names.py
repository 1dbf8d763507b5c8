"""The file names in a checkpoint folder, as a value the run folder's layout owner gives the
checkpointer (kept apart from ``checkpoint.py`` so that reading a run folder's layout does not
import torch)."""

from __future__ import annotations

import dataclasses
import os
import re


@dataclasses.dataclass(frozen=True)
class CheckpointNames:
    """The file names in a checkpoint folder. ``periodic``: a ``str.format`` pattern of the
    iteration (e.g. ``model_{:07d}.pth``); ``final``: the checkpoint at the end of training;
    ``pointer``: the file that names the newest checkpoint."""

    periodic: str
    final: str
    pointer: str

    def periodic_name(self, iteration: int) -> str:
        return self.periodic.format(iteration)

    def iteration_of(self, name: str) -> int | None:
        """The iteration in a periodic checkpoint's name (``model_0000123.pth`` -> 123), else
        None (the final checkpoint, or any other file)."""
        head, _, tail = self.periodic.partition("{")
        tail = tail.partition("}")[2]
        m = re.fullmatch(re.escape(head) + r"(\d+)" + re.escape(tail), name)
        if m is None or self.periodic_name(int(m.group(1))) != name:
            return None
        return int(m.group(1))

    def pointed(self, folder: str) -> str | None:
        """The file the pointer in ``folder`` names (e.g. ``model_0000099.pth``), or None."""
        last = os.path.join(folder, self.pointer)
        if not os.path.isfile(last):
            return None
        with open(last, encoding="utf-8") as f:
            return f.read().strip()

    def candidates(self, folder: str) -> list[str]:
        """Paths of the checkpoint files (``*.pth``) in ``folder``, newest first: the pointer's
        target, the final one, periodic ones by iteration, then any other ``*.pth``."""
        if not os.path.isdir(folder):
            return []
        files = {n for n in os.listdir(folder) if n.endswith(".pth") and not n.startswith(".")}
        it = self.iteration_of
        periodic = sorted((n for n in files if it(n) is not None), key=it, reverse=True)
        names = periodic + sorted(files - set(periodic) - {self.final})
        for first in (self.final, self.pointed(folder)):  # the last one inserted is first
            if first in files:
                names = [first] + [n for n in names if n != first]
        paths = (os.path.join(folder, n) for n in names)
        return [p for p in paths if os.path.isfile(p)]
