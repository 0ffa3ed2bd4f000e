"""The three MTCNN face-detection networks, rebuilt from their state dicts.

The architecture is read off the parameter names and shapes of the pretrained
weights that ship in the facenet-pytorch wheel (see ``conftest.mtcnn_state_dicts``);
facenet_pytorch itself is never imported. Spatial sizes follow from the shapes:
PNet maps a 12x12 crop to a 1x1 output, RNet's third conv leaves 64x3x3 = 576
features for ``dense4`` (24x24 input), ONet's fourth conv leaves 128x3x3 = 1152 for
``dense5`` (48x48 input). Pooling rounds up (``ceil_mode``), which is what makes
22 -> 11 -> 9 -> 4 and 46 -> 23 -> 21 -> 10 come out right.

The dense layers were trained on features flattened width-major with channels last
(``(W, H, C)``; the original networks come from column-major MATLAB/Caffe), so the
conv output is permuted before flattening. On ``skimage.data.lfw_subset`` this
order gives RNet and ONet 100 % face/non-face accuracy against 33 % and 65 % for
the channel-first ``(C, H, W)`` order (``test_mtcnn_model`` keeps it honest).

Every net returns ``(face_probability_pair, box_regression[, landmarks])``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Input side of each net, in pixels.
INPUT_SIZE = {"pnet": 12, "rnet": 24, "onet": 48}


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, W*H*C): the feature order the dense layers expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net: fully convolutional, a 12x12 crop gives a 1x1 output map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / non-face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # bounding-box regression

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net: 24x24 crops, three convs then a 576 -> 128 dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        return F.softmax(self.dense5_1(x), dim=1), self.dense5_2(x)


class ONet(nn.Module):
    """Output net: 48x48 crops, four convs, a 1152 -> 256 dense layer, three heads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # five facial landmarks (x, y)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        return F.softmax(self.dense6_1(x), dim=1), self.dense6_2(x), self.dense6_3(x)


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def load_net(name: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The named net in eval mode with ``state_dict`` loaded strictly."""
    net = NETS[name]()
    net.load_state_dict(state_dict, strict=True)
    return net.eval()


def lfw_faces(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``skimage.data.lfw_subset()`` (100 faces, then 100 non-faces, 25x25 gray in
    [0, 1], shipped inside scikit-image) resized to ``size``, gray replicated to
    three channels and normalised as MTCNN does. Returns ``(images, is_face)``;
    ``is_face`` uses the nets' class order (index 1 = face)."""
    from skimage.data import lfw_subset

    gray = torch.from_numpy(lfw_subset()).float().unsqueeze(1)
    x = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.expand(-1, 3, -1, -1) * 255.0 - 127.5) * 0.0078125
    is_face = torch.cat([torch.ones(100), torch.zeros(100)]).long()
    return x.contiguous(), is_face
