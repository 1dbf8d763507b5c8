"""The one module that touches torchvision's detection internals (some of them private).

It owns the backbone plumbing taken from torchvision: ``BackboneWithFPN``, ``LastLevelMaxPool``,
``FrozenBatchNorm2d`` and ``ImageList``. Matching and box coding are ours (``matcher.Matcher``,
``box_regression.Box2BoxTransform``, used by the RPN and the RoI heads alike); their equality
with torchvision's ``_utils.Matcher`` / ``_utils.BoxCoder`` is pinned by
``tests/modeling/test_matcher.py`` and ``test_box_regression.py``.

Pinned and covered by ``tests/modeling/test_tv_adapter.py``: when torchvision moves these, only
this file and that test change.
"""

from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = [
    "BackboneWithFPN",
    "FrozenBatchNorm2d",
    "ImageList",
    "LastLevelMaxPool",
]
