"""Export a run's newest valid checkpoint in Detectron2's names (``opmask-export``)."""

from __future__ import annotations

import os

from ..config import load_config
from ..modeling import build_model
from ..modeling.weights import detectron2_file
from ..utils.fs import atomic_write_bytes
from .checkpoint import CheckpointError
from .run_dir import RunFolderError
from .run_folder import RunFolder

FORMATS = ("detectron2",)


def export_run(run_dir: str, output: str | None = None, fmt: str = "detectron2") -> dict:
    """Write the newest valid checkpoint of ``run_dir`` as a Detectron2 checkpoint.

    Args:
        output: the file to write; ``.pkl`` gives a Detectron2 model-zoo pickle of numpy arrays,
            anything else a ``.pth``. Default ``RUN/export/{checkpoint}_detectron2.pth`` (outside
            ``models/``, where the checkpointer would take it for a checkpoint of ours).

    Returns:
        ``checkpoint`` (the file exported), ``output``, ``keys`` (count written), ``left_out``
        (our keys without a Detectron2 name).

    Raises:
        RunFolderError: not a run folder. CheckpointError: no valid checkpoint in it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    run = RunFolder(run_dir)
    if not run.is_run():
        raise RunFolderError(f"{run_dir}: no {run.CONFIG} (not a run folder of opmask-train)")
    cfg = load_config(run.config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    found = run.latest_checkpoint()
    if found is None:
        raise CheckpointError(f"{run_dir}/models: no valid checkpoint")
    path, state = found
    model = build_model(cfg)
    model.load_state_dict(state["model"])  # the checkpoint matches the run's config
    if output is None:
        stem = os.path.splitext(os.path.basename(path))[0]
        output = run.export(f"{stem}_detectron2.pth")
        os.makedirs(os.path.dirname(output), exist_ok=True)
    data, left_out = detectron2_file(model, output.endswith(".pkl"))
    atomic_write_bytes(output, data)
    return {
        "checkpoint": path,
        "output": output,
        "keys": len(model.state_dict()) - len(left_out),
        "left_out": left_out,
    }
