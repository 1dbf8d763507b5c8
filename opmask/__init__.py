"""OPMask: object mask priors for partially supervised instance segmentation."""

__version__ = "0.1.0"
