"""The file names in a checkpoint folder, as a value the run folder's layout owner gives the
checkpointer (kept apart from ``checkpoint.py`` so that reading a run folder's layout does not
import torch)."""

from __future__ import annotations

import dataclasses
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
