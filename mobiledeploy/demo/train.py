"""Train the shipped demo: MobileNetV3-Small on the procedural shapes dataset (CPU, seeded).

    python -m mobiledeploy.demo.train --out examples/shapes [--minutes 12]

Images are rendered in memory at 128 px by ``shapes.iterate`` and resized to the definition's
input size by the same decode/resize/normalise code that validation uses, so the model is
trained on exactly the preprocessing it is validated and deployed with. Writes the canonical
weights file named by the definition and prints accuracy on the shipped validation split.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _render_chunk(args):
    from . import shapes

    n, seed, size = args
    imgs, labels = [], []
    for img, lab in shapes.iterate(n, seed, size):
        imgs.append(np.asarray(img, dtype=np.uint8))
        labels.append(lab)
    return np.stack(imgs), np.asarray(labels)


def render_dataset(n: int, seed: int, size: int, height: int, width: int, workers: int = 2):
    """n training images (uint8 NHWC at the model's size) and labels, rendered in parallel."""
    from concurrent.futures import ProcessPoolExecutor

    from PIL import Image

    chunks = [(n // workers + (i < n % workers), seed * 1000 + i, size) for i in range(workers)]
    with ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(_render_chunk, chunks))
    imgs = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if (size, size) != (height, width):
        imgs = np.stack([
            np.asarray(Image.fromarray(im).resize((width, height), Image.Resampling.BILINEAR)) for im in imgs
        ])
    return imgs, labels


def evaluate(model, batch) -> float:
    import torch

    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(batch.x[i:i + 64])) for i in range(0, len(batch), 64)])
    pred = logits.argmax(1).numpy()
    return float(np.mean(pred == np.asarray(batch.labels)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/shapes", help="folder with shapes.yaml")
    ap.add_argument("--definition", default="shapes.yaml")
    ap.add_argument("--train-images", type=int, default=24000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from ..architectures.torch_builder import build_torch_model, recalibrate_bn
    from ..architectures.weights import save_weights
    from ..definition import load_definition
    from ..images import load_batch, normalise

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    d = load_definition(out / args.definition, check_files=False)
    spec = d.architecture_spec()
    t0 = time.time()
    imgs, labels = render_dataset(args.train_images, args.seed, 128, d.input.height, d.input.width)
    print(f"rendered {len(imgs)} training images in {time.time() - t0:.0f}s", flush=True)
    val = load_batch(d, "validation")

    model = build_torch_model(spec, seed=args.seed).train()
    for m in model.modules():  # a short schedule needs BN statistics that keep up
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    steps = args.epochs * (len(imgs) // args.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.02)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.15)
    rng = np.random.default_rng(args.seed)
    step = 0
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(imgs))
        t_ep, seen, correct = time.time(), 0, 0
        for i in range(0, len(order) - args.batch + 1, args.batch):
            idx = order[i:i + args.batch]
            px = imgs[idx]
            flip = rng.random(len(idx)) < 0.5  # mirror images: every class keeps its name
            px = np.where(flip[:, None, None, None], px[:, :, ::-1], px)
            x = torch.from_numpy(normalise(px, d.input))
            y = torch.from_numpy(labels[idx]).long()
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            if step % 50 == 0:
                print(f"  step {step}/{steps} loss {loss.item():.3f} "
                      f"{seen / (time.time() - t_ep):.0f} img/s", flush=True)
        model.eval()
        acc = evaluate(model, val)
        print(f"epoch {epoch + 1}/{args.epochs}: train acc {correct / seen:.3f}, val acc {acc:.4f}, "
              f"{seen / (time.time() - t_ep):.0f} img/s, {time.time() - t0:.0f}s total", flush=True)
    calib = imgs[: min(len(imgs), 3000)]
    recalibrate_bn(model, (normalise(calib[i:i + 100], d.input) for i in range(0, len(calib), 100)))
    acc = evaluate(model, val)
    print(f"after BN recalibration: val acc {acc:.4f}", flush=True)
    weights = out / (d.weights or "shapes.safetensors")
    save_weights(model, weights, metadata={"val_top1": f"{acc:.4f}", "seed": str(args.seed)})
    summary = {"val_top1": acc, "seconds": round(time.time() - t0, 1), "train_images": len(imgs),
               "epochs": args.epochs, "torch": torch.__version__}
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
