"""PyTorch reference model built from an ArchitectureSpec.

Module names (``stem.conv``, ``blocks.3.dw.bn``, ``blocks.3.se.fc1``, ``head.classifier`` ...)
are the canonical weight names; the Keras builder uses the same names with ``_`` for ``.``.
"""

from __future__ import annotations

from .heads import head_module
from .spec import ArchitectureSpec, Block


def _torch():
    from .._deps import require

    return require("torch", "the PyTorch reference model")


def _act(name: str):
    nn = _torch().nn
    return {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "hswish": nn.Hardswish,
        "none": nn.Identity,
    }[name]()


def build_torch_model(spec: ArchitectureSpec, seed: int = 0):
    """An ``nn.Module`` in eval mode: NCHW float input (normalised) -> logits
    ((N, classes), or (N, classes, H, W) for a segmentation spec; for a detection spec the tuple
    (class_logits (N, anchors, classes + 1), box_encodings (N, anchors, 4)), see ssdlite.py).

    Parameters are initialised deterministically from ``seed`` (Kaiming for convs, as
    torchvision does); load real weights with ``weights.load_torch_weights``.
    """
    torch = _torch()
    nn = torch.nn

    sizes = spec.conv_inputs()

    class ConvBN(nn.Sequential):
        def __init__(self, cin, cout, k, stride, groups, act, prefix="", dilation=1):
            super().__init__()
            p = (k - 1) // 2 * dilation
            # the SSDLite head's convs carry no prefix: detection is symmetric-only (spec.resolve)
            pads = spec.conv_pads(sizes[prefix], k, stride, dilation) if k > 1 and prefix in sizes else ((p, p), (p, p))
            if pads != ((p, p), (p, p)):
                # TensorFlow "same" at stride 2 on an even size pads more after than before,
                # which Conv2d's own padding cannot say: an explicit zero pad, then no padding
                (top, bottom), (left, right) = pads
                self.pad = nn.ZeroPad2d((left, right, top, bottom))
                p = 0
            self.conv = nn.Conv2d(cin, cout, k, stride, p, dilation=dilation, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=spec.bn_eps, momentum=0.01)
            self.act = _act(act)

    class SE(nn.Module):
        def __init__(self, ch, squeeze):
            super().__init__()
            self.fc1 = nn.Conv2d(ch, squeeze, 1)
            self.relu = nn.ReLU()
            self.fc2 = nn.Conv2d(squeeze, ch, 1)
            self.gate = nn.Hardsigmoid()

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            return x * self.gate(self.fc2(self.relu(self.fc1(s))))

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, b: Block, prefix: str):
            super().__init__()
            self.use_res = b.residual and b.stride == 1 and cin == b.out
            if b.fused:
                if b.has_expand(cin):
                    self.expand = ConvBN(cin, b.exp, b.kernel, b.stride, 1, b.activation, prefix + ".expand",
                                         b.dilation)
            else:
                if b.has_expand(cin):
                    self.expand = ConvBN(cin, b.exp, 1, 1, 1, b.activation)
                self.dw = ConvBN(b.exp, b.exp, b.kernel, b.stride, b.exp, b.activation, prefix + ".dw", b.dilation)
            if b.se:
                self.se = SE(b.exp, b.se_channels)
            self.project = ConvBN(b.exp, b.out, 1, 1, 1, "none")

        def forward(self, x):
            y = x
            for name in ("expand", "dw", "se", "project"):
                m = getattr(self, name, None)
                if m is not None:
                    y = m(y)
            return x + y if self.use_res else y

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            if spec.head_hidden:
                self.fc1 = nn.Linear(spec.last_conv, spec.head_hidden)
                self.act = _act(spec.head_activation)
                self.dropout = nn.Dropout(spec.dropout)
                self.classifier = nn.Linear(spec.head_hidden, spec.num_classes)
            else:
                self.dropout = nn.Dropout(spec.dropout)
                self.classifier = nn.Linear(spec.last_conv, spec.num_classes)

        def forward(self, x):
            x = x.mean((2, 3))
            if spec.head_hidden:
                x = self.act(self.fc1(x))
            return self.classifier(self.dropout(x))

    class MobileNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = ConvBN(
                spec.in_channels, spec.stem_out, spec.stem_kernel, spec.stem_stride, 1,
                spec.stem_activation, "stem",
            )
            blocks, cin = [], spec.stem_out
            for i, b in enumerate(spec.blocks):
                blocks.append(Bottleneck(cin, b, f"blocks.{i}"))
                cin = b.out
            self.blocks = nn.Sequential(*blocks)
            self.last = ConvBN(cin, spec.last_conv, 1, 1, 1, spec.last_activation)
            if spec.detection:
                from ..tasks.detection.ssdlite import torch_head as ssd_head

                self.head = ssd_head(spec, ConvBN)
            elif spec.segmentation:
                from ..tasks.segmentation.lraspp import torch_head

                self.head = torch_head(spec, ConvBN)
            elif spec.head_plugin:
                self.head = head_module(spec).torch_head(spec, nn, _act)
            else:
                self.head = Head()

        def forward(self, x):
            if spec.detection is not None:
                from ..tasks.detection.ssdlite import torch_forward

                return torch_forward(self, x)
            if spec.segmentation is None:
                return self.head(self.last(self.blocks(self.stem(x))))
            y, low = self.stem(x), None
            for i, block in enumerate(self.blocks):
                y = block(y)
                if i == spec.segmentation.low_block:
                    low = y
            return self.head(low, self.last(y), x.shape[-2:])

    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = MobileNet()
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
    finally:
        torch.random.set_rng_state(gen_state)
    model.spec = spec
    return model.eval()


def recalibrate_bn(model, batches) -> None:
    """Re-estimate every BatchNorm's statistics as exact averages over ``batches``.

    ``batches`` yields normalised float NCHW arrays (or is one array). Used after a short
    training schedule, whose running averages lag, and to give seeded models real statistics.
    """
    import numpy as np

    torch = _torch()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: the exact mean over every batch
    model.train()
    with torch.no_grad():
        for x in [batches] if isinstance(batches, np.ndarray) else batches:
            model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    model.eval()
