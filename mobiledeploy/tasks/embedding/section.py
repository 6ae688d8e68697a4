"""``architecture.embedding``: where the embedding is taken and how it is shaped."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ...schema import Strict


class EmbeddingSection(BaseModel):
    """The embedding head's options (``task: image-embedding``).

    ``features: hidden`` (default) is the classifier's hidden layer after its activation (MobileNetV3's
    1024/1280-wide 1x1 "conv" after pooling: what the classifier's last layer reads), ``pooled`` the
    last conv's globally pooled features (no fully connected layer). The classifier's final layer is
    dropped either way, so a classifier's weights file without ``head.classifier.*`` serves as is.
    """

    model_config = Strict
    features: Literal["hidden", "pooled"] = "hidden"
