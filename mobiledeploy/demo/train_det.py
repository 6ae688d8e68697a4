"""Train the shipped detection demo: MobileNetV3-Small + SSDLite on shape scenes (CPU, seeded).

    python -m mobiledeploy.demo.train_det --out examples/shapes_det [--threads 1]

Scenes (one to four symbols with boxes) are rendered in memory by ``shapes_det`` at the
definition's input size and normalised by the code validation uses. SSD training: an anchor is
positive when its IoU with a labelled box is >= 0.5 (and every box claims its best anchor),
box targets are the definition's box coder encodings (``detection.encode_boxes``), the loss is
smooth L1 on positives plus softmax cross-entropy with hard negative mining (3 negatives per
positive), both divided by the number of positives. The backbone starts from the classification
demo's weights where names and shapes agree (``--init``; the halved last stage does not).
After training, BatchNorm statistics are re-estimated on training scenes and ``training.json``
records mAP@0.5 on the shipped validation boxes, decoded by ``detection.postprocess``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def render(n: int, seed: int, size: int, max_shapes: int = 4):
    """n scenes: uint8 NHWC pixels and per-image (boxes (k, 4), labels (k,))."""
    from .shapes_det import iterate_det_scenes

    imgs = np.empty((n, size, size, 3), np.uint8)
    targets = []
    for i, (img, boxes, labels) in enumerate(iterate_det_scenes(n, seed, size, max_shapes=max_shapes)):
        imgs[i] = img
        targets.append((boxes, labels))
    return imgs, targets


def corners(anchors: np.ndarray) -> np.ndarray:
    """[yc, xc, h, w] anchors -> [ymin, xmin, ymax, xmax]."""
    yc, xc, h, w = anchors.T
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1)


def match(anchors: np.ndarray, anchor_corners: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
          scales, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """SSD matching for one image: per-anchor class target (0 = background) and box encodings."""
    from ..tasks.detection.decode import encode_boxes, iou_matrix

    cls = np.zeros(len(anchors), np.int64)
    loc = np.zeros((len(anchors), 4), np.float32)
    if not len(boxes):
        return cls, loc
    iou = iou_matrix(boxes, anchor_corners)  # (G, A)
    best_gt = iou.argmax(0)
    best_iou = iou.max(0)
    # every labelled box claims its best anchor, even below the threshold
    for g, a in enumerate(iou.argmax(1)):
        best_gt[a], best_iou[a] = g, 1.0
    pos = best_iou >= threshold
    cls[pos] = labels[best_gt[pos]] + 1
    loc[pos] = encode_boxes(boxes[best_gt[pos]], anchors[pos], scales)
    return cls, loc


def ssd_loss(logits, box_enc, cls_t, loc_t, neg_ratio: int = 3):
    """Smooth L1 on positives + cross-entropy on positives and the hardest negatives."""
    import torch
    import torch.nn.functional as F

    pos = cls_t > 0
    n_pos = pos.sum().clamp(min=1).float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cls_t.reshape(-1), reduction="none").view_as(cls_t)
    with torch.no_grad():
        neg_loss = ce.masked_fill(pos, -1.0)
        rank = neg_loss.argsort(1, descending=True).argsort(1)
        n_neg = (pos.sum(1, keepdim=True) * neg_ratio).clamp(max=cls_t.shape[1] - 1)
        hard = rank < n_neg.clamp(min=neg_ratio)  # an image without objects still learns background
    cls_loss = (ce * (pos | hard)).sum() / n_pos
    loc_loss = F.smooth_l1_loss(box_enc[pos], loc_t[pos], reduction="sum") / n_pos
    return cls_loss, loc_loss


def predict(model, x: np.ndarray, batch: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Raw (class_logits, box_encodings) of normalised NCHW inputs, in batches."""
    import torch

    ls, bs = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            lg, be = model(torch.from_numpy(x[i:i + batch]))
            ls.append(lg.numpy())
            bs.append(be.numpy())
    return np.concatenate(ls), np.concatenate(bs)


def evaluate(model, spec, x: np.ndarray, gts, score_threshold: float | None = None) -> dict:
    """mAP@0.5 (and per class) of the decoded detections against labelled boxes."""
    from ..tasks.detection.decode import postprocess
    from ..tasks.detection.metrics import ap_per_class
    from ..tasks.detection.ssdlite import anchors, decoding_spec

    dspec = decoding_spec(spec)
    if score_threshold is not None:
        dspec = {**dspec, "score_threshold": score_threshold}
    logits, boxes = predict(model, x)
    dets = postprocess(logits, boxes, anchors(spec), dspec)
    aps = ap_per_class(dets, gts, spec.num_classes)
    return {"map50": float(np.mean(list(aps.values()))), "ap50_per_class": aps,
            "detections": int(sum(len(d) for d in dets))}


def load_matching(model, path: Path) -> int:
    """Copy every tensor of a weights file whose name and shape the model shares; return the count."""
    import torch

    from ..architectures.weights import read_weights

    own = model.state_dict()
    src = read_weights(path)
    take = {k: torch.from_numpy(np.array(v)) for k, v in src.items() if k in own and tuple(own[k].shape) == v.shape}
    model.load_state_dict(take, strict=False)
    return len(take)


def main(argv=None) -> dict:
    """Train, recalibrate BN, write the weights and training.json; return the summary."""
    from .train import batches, minimise, optimiser, scene_task_definition, training_parser

    ap = training_parser(__doc__.splitlines()[0], out="examples/shapes_det", definition="shapes_det.yaml",
                         train_images=8000, epochs=6, batch=32, threads=1)
    ap.add_argument("--init", default="examples/shapes/shapes.safetensors",
                    help="weights to start the backbone from ('' for none)")
    ap.add_argument("--max-shapes", type=int, default=4)
    ap.add_argument("--val-limit", type=int, default=None, help="score on at most this many validation images")
    args = ap.parse_args(argv)

    import torch

    from .._host import cpuinfo
    from ..architectures.stats import totals
    from ..architectures.torch_builder import build_torch_model, recalibrate_bn
    from ..architectures.weights import save_weights
    from ..definition import Task
    from ..images import load_batch, normalise
    from ..tasks.detection.boxes import load_boxes
    from ..tasks.detection.ssdlite import anchors as make_anchors

    out, d = scene_task_definition(args, Task.object_detection)
    spec = d.architecture_spec()
    anchors = make_anchors(spec)
    anchor_corners = corners(anchors)
    scales = spec.detection.options.box_coder
    t0, c0 = time.time(), time.process_time()
    # the shipped splits use other seeds (shapes_det.DET_SPLIT_SEEDS): training never sees them
    imgs, targets = render(args.train_images, args.seed * 1000 + 13, d.input.height, args.max_shapes)
    t_render = time.time() - t0
    print(f"rendered {len(imgs)} training scenes in {t_render:.0f}s", flush=True)
    val = load_batch(d, "validation", limit=args.val_limit)
    val_boxes = load_boxes(d, "validation", val.files)

    model = build_torch_model(spec, seed=args.seed).train()
    init = None
    if args.init:
        init = load_matching(model, Path(args.init))
        print(f"initialised {init} tensors from {args.init}", flush=True)
    with torch.no_grad():  # small predictions at first, background likely (SSD / RetinaNet priors)
        for name, p in model.named_parameters():
            if name.startswith(("head.cls.", "head.box.")) and ".pred." in name:
                p.normal_(0, 0.01) if name.endswith("weight") else p.zero_()
                if name.startswith("head.cls.") and name.endswith("bias"):
                    p.view(-1, spec.num_classes + 1)[:, 0] = 4.6  # softmax P(background) ~ 0.9 at first
    steps = args.epochs * (len(imgs) // args.batch)
    opt, sched = optimiser(model, args.lr, steps)
    rng = np.random.default_rng(args.seed)
    step, history = 0, []
    t_train = time.time()
    for epoch in range(args.epochs):
        model.train()
        t_ep, seen, sums = time.time(), 0, [0.0, 0.0]
        for idx, flip in batches(rng, len(imgs), args.batch):
            px = np.where(flip[:, None, None, None], imgs[idx][:, :, ::-1], imgs[idx])
            cls_t, loc_t = [], []
            for k, f in zip(idx, flip, strict=True):
                boxes, labels = targets[k]
                if f:
                    boxes = boxes[:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, 1, 0, 1]
                c, lo = match(anchors, anchor_corners, boxes.astype(np.float32), labels, scales)
                cls_t.append(c)
                loc_t.append(lo)
            x = torch.from_numpy(normalise(px, d.input))
            logits, box_enc = model(x)
            cls_loss, loc_loss = ssd_loss(logits, box_enc, torch.from_numpy(np.stack(cls_t)),
                                          torch.from_numpy(np.stack(loc_t)))
            minimise(opt, sched, cls_loss + loc_loss)
            step += 1
            seen += len(idx)
            sums[0] += cls_loss.item() * len(idx)
            sums[1] += loc_loss.item() * len(idx)
            if step % 50 == 0:
                print(f"  step {step}/{steps} cls {cls_loss.item():.3f} loc {loc_loss.item():.3f} "
                      f"{seen / (time.time() - t_ep):.0f} img/s", flush=True)
        model.eval()
        score = evaluate(model, spec, val.x, val_boxes)
        history.append({"epoch": epoch + 1, "cls_loss": round(sums[0] / seen, 4), "loc_loss": round(sums[1] / seen, 4),
                        "val_map50": round(score["map50"], 4)})
        print(f"epoch {epoch + 1}/{args.epochs}: cls {sums[0] / seen:.3f} loc {sums[1] / seen:.3f}, val mAP@0.5 "
              f"{score['map50']:.4f}, {time.time() - t0:.0f}s total, {time.process_time() - c0:.0f}s CPU", flush=True)
    t_train = time.time() - t_train
    calib = imgs[: min(len(imgs), 2000)]
    recalibrate_bn(model, (normalise(calib[i:i + 100], d.input) for i in range(0, len(calib), 100)))
    score = evaluate(model, spec, val.x, val_boxes)
    low = evaluate(model, spec, val.x, val_boxes, score_threshold=0.01)
    print(f"after BN recalibration: val mAP@0.5 {score['map50']:.4f} (score threshold "
          f"{spec.detection.options.score_threshold}), {low['map50']:.4f} at 0.01", flush=True)
    weights = out / (d.weights or f"{d.name}.safetensors")
    save_weights(model, weights, metadata={"val_map50": f"{score['map50']:.4f}", "seed": str(args.seed)})
    macs, params = totals(spec)
    labels = d.labels_list()
    summary = {
        "val_map50": round(score["map50"], 4),
        "val_map50_score_threshold": spec.detection.options.score_threshold,
        "val_map50_at_0.01": round(low["map50"], 4),
        "val_ap50_per_class": {labels[c]: round(v, 4) for c, v in score["ap50_per_class"].items()},
        "val_images": len(val.x),
        "val_boxes": int(sum(len(b[1]) for b in val_boxes)),
        "val_detections": score["detections"],
        "seconds": round(time.time() - t0, 1),
        # CPU time of this process: the wall clock also counts other jobs on a shared machine
        "cpu_seconds": round(time.process_time() - c0, 1),
        "train_seconds": round(t_train, 1),
        "render_seconds": round(t_render, 1),
        "train_images": len(imgs),
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "init": args.init or None,
        "init_tensors": init,
        "cpu": cpuinfo().get("model name", "unknown"),
        "macs": macs,
        "params": params,
        "anchors": int(len(anchors)),
        "history": history,
        "torch": torch.__version__,
        "bn": "statistics recalibrated on 2000 training scenes after training",
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "val_ap50_per_class")}))
    return summary


if __name__ == "__main__":
    main()
