"""The detector: backbone, RPN, CAM box head, object mask prior, mask heads, losses."""

from .build import build_model
from .meta_arch import OPMask
from .omp import object_mask_prior

__all__ = ["OPMask", "build_model", "object_mask_prior"]
