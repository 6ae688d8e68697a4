"""Train the shipped segmentation demo: MobileNetV3-Small + LR-ASPP on shape scenes (CPU, seeded).

    python -m mobiledeploy.demo.train_seg --out examples/shapes_seg [--threads 1]

Scenes (one to three symbols, per-pixel class ids) are rendered in memory by
``shapes.iterate_scenes`` at the definition's input size and normalised by the same code that
validation uses. After training, BatchNorm statistics are re-estimated on training scenes (the
running averages of a short schedule lag) and the canonical weights file the definition names
is written with ``training.json`` (mean IoU and pixel accuracy on the shipped validation masks).
"""

from __future__ import annotations

import json
import platform
import time

import numpy as np


def render_scenes(n: int, seed: int, size: int, max_shapes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """n scenes as uint8 NHWC pixels and uint8 (N, H, W) class-id masks (one process: the
    machine is shared; rendering is ~4 ms a scene)."""
    from . import shapes

    imgs = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for i, (img, ids) in enumerate(shapes.iterate_scenes(n, seed, size, max_shapes=max_shapes)):
        imgs[i], masks[i] = img, ids
    return imgs, masks


def predict(model, x: np.ndarray, batch: int = 50) -> np.ndarray:
    """Logits (N, classes, H, W) of normalised NCHW inputs, in batches."""
    import torch

    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()


def evaluate(model, x: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Mean IoU and pixel accuracy against labelled masks."""
    from ..tasks.segmentation.metrics import confusion, iou_per_class, mean_iou, pixel_accuracy

    logits = predict(model, x)
    pred = logits.argmax(1)
    n = logits.shape[1]
    ious = iou_per_class(confusion(pred, masks, n))
    return {"miou": mean_iou(pred, masks, n), "pixel_accuracy": pixel_accuracy(pred, masks),
            "iou_per_class": [round(float(v), 4) for v in ious]}


def main(argv=None) -> dict:
    """Train, recalibrate BN, write the weights and training.json; return the summary."""
    from .train import batches, minimise, optimiser, scene_task_definition, training_parser

    ap = training_parser(__doc__.splitlines()[0], out="examples/shapes_seg", definition="shapes_seg.yaml",
                         train_images=18000, epochs=4, batch=32, threads=1)
    ap.add_argument("--max-shapes", type=int, default=3)
    ap.add_argument("--val-limit", type=int, default=None, help="score on at most this many validation images")
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from .._host import cpuinfo
    from ..architectures.stats import totals
    from ..architectures.torch_builder import build_torch_model, recalibrate_bn
    from ..architectures.weights import save_weights
    from ..definition import Task
    from ..images import load_batch, normalise
    from ..tasks.segmentation.masks import IGNORE, load_masks

    out, d = scene_task_definition(args, Task.semantic_segmentation)
    spec = d.architecture_spec()
    t0, c0 = time.time(), time.process_time()
    # the shipped splits use other seeds (shapes.SEG_SPLIT_SEEDS): training never sees them
    imgs, masks = render_scenes(args.train_images, args.seed * 1000 + 11, d.input.height, args.max_shapes)
    t_render = time.time() - t0
    print(f"rendered {len(imgs)} training scenes in {t_render:.0f}s", flush=True)
    val = load_batch(d, "validation", limit=args.val_limit)
    val_masks = load_masks(d, "validation", val.files)

    model = build_torch_model(spec, seed=args.seed).train()
    steps = args.epochs * (len(imgs) // args.batch)
    opt, sched = optimiser(model, args.lr, steps)
    rng = np.random.default_rng(args.seed)
    step, history = 0, []
    t_train = time.time()
    for epoch in range(args.epochs):
        model.train()
        t_ep, seen, loss_sum = time.time(), 0, 0.0
        for idx, flip in batches(rng, len(imgs), args.batch):
            px, ids = imgs[idx], masks[idx]
            px = np.where(flip[:, None, None, None], px[:, :, ::-1], px)
            ids = np.where(flip[:, None, None], ids[:, :, ::-1], ids)
            x = torch.from_numpy(normalise(px, d.input))
            y = torch.from_numpy(ids.astype(np.int64))
            loss = F.cross_entropy(model(x), y, ignore_index=IGNORE)
            minimise(opt, sched, loss)
            step += 1
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            if step % 100 == 0:
                print(f"  step {step}/{steps} loss {loss.item():.3f} {seen / (time.time() - t_ep):.0f} img/s",
                      flush=True)
        model.eval()
        score = evaluate(model, val.x, val_masks)
        history.append({"epoch": epoch + 1, "loss": round(loss_sum / seen, 4), "val_miou": round(score["miou"], 4)})
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.3f}, val mIoU {score['miou']:.4f}, "
              f"pixel acc {score['pixel_accuracy']:.4f}, {seen / (time.time() - t_ep):.0f} img/s, "
              f"{time.time() - t0:.0f}s total, {time.process_time() - c0:.0f}s CPU", flush=True)
    t_train = time.time() - t_train
    calib = imgs[: min(len(imgs), 2000)]
    recalibrate_bn(model, (normalise(calib[i:i + 100], d.input) for i in range(0, len(calib), 100)))
    score = evaluate(model, val.x, val_masks)
    print(f"after BN recalibration: val mIoU {score['miou']:.4f}, pixel acc {score['pixel_accuracy']:.4f}",
          flush=True)
    weights = out / (d.weights or f"{d.name}.safetensors")
    save_weights(model, weights, metadata={"val_miou": f"{score['miou']:.4f}", "seed": str(args.seed)})
    macs, params = totals(spec)
    summary = {
        "val_miou": round(score["miou"], 4),
        "val_pixel_accuracy": round(score["pixel_accuracy"], 4),
        "val_iou_per_class": dict(zip(d.labels_list(), score["iou_per_class"], strict=True)),
        "val_images": len(val.x),
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
        "cpu": cpuinfo().get("model name") or platform.processor() or platform.machine(),
        "macs": macs,
        "params": params,
        "history": history,
        "torch": torch.__version__,
        "bn": "statistics recalibrated on 2000 training scenes after training",
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "val_iou_per_class")}))
    return summary


if __name__ == "__main__":
    main()
