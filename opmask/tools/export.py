"""Export a run's newest valid checkpoint in Detectron2's names (``opmask-export``)."""

from __future__ import annotations

import os

from ..config import load_config
from ..modeling.weights import detectron2_file
from ..run.claim import RunFolderError
from ..run.folder import RunFolder, owning_run
from ..utils.errors import OPMaskInputError
from ..utils.fs import atomic_write_bytes

FORMATS = ("detectron2",)


class ExportOutputError(OPMaskInputError):
    """The output path cannot be written: a run folder's own file, an existing file without
    ``overwrite``, a folder, or a file in a folder that does not exist."""


def check_output(output: str, *, overwrite: bool = False, new_folder: bool = False) -> None:
    """Refuse an output path that would destroy something (nothing is written). With
    ``new_folder`` the output's folder may be missing (the caller makes it).

    Raises:
        ExportOutputError: ``output`` is (through symlinks or ``..`` too) a file a run folder
            owns (``models/``, ``config.yaml``, ``metrics.json`` ...: :func:`owning_run`), a
            folder, an existing file (unless ``overwrite``), or in a folder that does not exist.
    """
    run = owning_run(output)
    if run is not None:
        raise ExportOutputError(
            f"--output {output}: refusing to write into run folder {run}'s own files "
            f"(models/, config.yaml, metrics.json, logs, inference/ ...); write it elsewhere, "
            f"e.g. {os.path.join(run, RunFolder.EXPORT)}/"
        )
    if os.path.isdir(output):
        raise ExportOutputError(f"--output {output} is a folder; name the file to write")
    if os.path.lexists(output) and not overwrite:
        raise ExportOutputError(f"--output {output} exists; pass --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(output))
    if not new_folder and not os.path.isdir(folder):
        raise ExportOutputError(f"--output {output}: folder {folder} does not exist")


def export_run(
    run_dir: str, output: str | None = None, fmt: str = "detectron2", *, overwrite: bool = False
) -> dict:
    """Write the newest valid checkpoint of ``run_dir`` as a Detectron2 checkpoint.

    Args:
        output: the file to write; ``.pkl`` gives a Detectron2 model-zoo pickle of numpy arrays,
            anything else a ``.pth``. Default ``RUN/export/{checkpoint}_detectron2.pth`` (outside
            ``models/``, where the checkpointer would take it for a checkpoint of ours).
        overwrite: replace an existing output file (never a run folder's own file).

    Returns:
        ``checkpoint`` (the file exported), ``output``, ``keys`` (count written), ``left_out``
        (our keys without a Detectron2 name).

    Raises:
        RunFolderError: not a run folder. CheckpointError: no valid checkpoint in it, or one
        that does not match its config.yaml. ExportOutputError: see :func:`check_output`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    run = RunFolder(run_dir)
    if not run.is_run():
        raise RunFolderError(f"{run_dir}: no {run.CONFIG} (not a run folder of opmask-train)")
    if output is not None:
        check_output(output, overwrite=overwrite)
    cfg = load_config(run.config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model, path, _ = run.load_model(cfg)
    if output is None:
        stem = os.path.splitext(os.path.basename(path))[0]
        output = run.export(f"{stem}_detectron2.pth")
        check_output(output, overwrite=overwrite, new_folder=True)
        os.makedirs(os.path.dirname(output), exist_ok=True)
    data, left_out = detectron2_file(model, output.endswith(".pkl"))
    atomic_write_bytes(output, data)
    return {
        "checkpoint": path,
        "output": output,
        "keys": len(model.state_dict()) - len(left_out),
        "left_out": left_out,
    }
