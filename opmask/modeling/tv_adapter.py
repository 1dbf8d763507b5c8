"""The one module that touches torchvision's detection internals (some of them private).

Pinned and covered by ``tests/modeling/test_tv_adapter.py``: when torchvision moves these, only
this file and that test change.
"""

from torchvision.models.detection import _utils as _det_utils
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

Matcher = _det_utils.Matcher
BoxCoder = _det_utils.BoxCoder

__all__ = [
    "BackboneWithFPN",
    "BoxCoder",
    "FrozenBatchNorm2d",
    "ImageList",
    "LastLevelMaxPool",
    "Matcher",
]
