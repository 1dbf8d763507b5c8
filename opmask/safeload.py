"""Reading ``torch.load(weights_only=True)`` failures: shared by checkpoints and weight files."""

from __future__ import annotations


def refusal_reason(e: Exception) -> str:
    """The informative line of torch.load's long weights-only message (or the exception name)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    hits = [ln for ln in lines if "Unsupported global" in ln or "Unsupported operand" in ln]
    return (hits or lines or [type(e).__name__])[0].split(". Please")[0]
