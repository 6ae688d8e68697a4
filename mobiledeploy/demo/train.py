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

    chunks = [(n // workers + (i < n % workers), seed * 1000 + i, size) for i in range(workers)]
    with ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(_render_chunk, chunks))
    imgs = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _resize(imgs, height, width), labels


def evaluate(model, batch) -> float:
    import torch

    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(batch.x[i:i + 64])) for i in range(0, len(batch), 64)])
    pred = logits.argmax(1).numpy()
    return float(np.mean(pred == np.asarray(batch.labels)))


def optimiser(model, lr: float, steps: int):
    """The demo trainers' optimiser: AdamW with a one-cycle schedule over ``steps``, and BatchNorm
    statistics that keep up with a short schedule (momentum 0.1)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.02)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)


def minimise(opt, sched, loss) -> None:
    """One optimiser and schedule step on ``loss``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()


def batches(rng, n: int, batch: int):
    """One epoch: (indices, mirror flags) per full batch of a fresh permutation of ``n`` items
    (the shapes keep their class, mask or box in a mirror)."""
    order = rng.permutation(n)
    for i in range(0, n - batch + 1, batch):
        idx = order[i:i + batch]
        yield idx, rng.random(len(idx)) < 0.5


def train_model(d, *, train_images: int = 24000, epochs: int = 6, batch: int = 96, lr: float = 3e-3,
                seed: int = 7, threads: int = 2, render_workers: int = 2, recalibrate_images: int = 3000,
                init_state=None, say=print):
    """Train a definition's network on the procedural shapes (seeded, CPU) and return
    ``(model, summary)``: the trained torch module (BatchNorm statistics recalibrated) and
    ``{"val_top1", "seconds", "train_images", "epochs", "torch"}``, accuracy on the definition's
    validation images. The definition's labels must be the shapes classes (``shapes.CLASSES``).
    ``init_state`` (canonical weights) fine-tunes from them instead of the seeded initialisation."""
    import torch
    import torch.nn.functional as F

    from ..architectures.torch_builder import build_torch_model, recalibrate_bn
    from ..errors import UserError
    from ..images import load_batch, normalise
    from . import shapes

    if d.labels_list() != shapes.CLASSES:
        raise UserError(f"{d.source_path}: labels: training renders the shapes classes "
                        f"({', '.join(shapes.CLASSES)}) in that order; the labels file differs")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    spec = d.architecture_spec()
    t0 = time.time()
    if render_workers > 1:
        imgs, labels = render_dataset(train_images, seed, 128, d.input.height, d.input.width, render_workers)
    else:  # in-process: small budgets, or inside a worker that should not fork more workers
        imgs, labels = _render_chunk((train_images, seed * 1000, 128))
        imgs = _resize(imgs, d.input.height, d.input.width)
    say(f"rendered {len(imgs)} training images in {time.time() - t0:.0f}s")
    val = load_batch(d, "validation")

    model = build_torch_model(spec, seed=seed).train()
    if init_state is not None:
        from ..architectures.weights import load_torch_weights

        load_torch_weights(model, init_state, "init_state")
    batch = min(batch, len(imgs))
    steps = max(1, epochs * (len(imgs) // batch))
    opt, sched = optimiser(model, lr, steps)
    rng = np.random.default_rng(seed)
    step = 0
    for epoch in range(epochs):
        model.train()
        t_ep, seen, correct = time.time(), 0, 0
        for idx, flip in batches(rng, len(imgs), batch):
            px = imgs[idx]
            px = np.where(flip[:, None, None, None], px[:, :, ::-1], px)
            x = torch.from_numpy(normalise(px, d.input))
            y = torch.from_numpy(labels[idx]).long()
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.05)
            minimise(opt, sched, loss)
            step += 1
            seen += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            if step % 50 == 0:
                say(f"  step {step}/{steps} loss {loss.item():.3f} {seen / (time.time() - t_ep):.0f} img/s")
        model.eval()
        acc = evaluate(model, val)
        say(f"epoch {epoch + 1}/{epochs}: train acc {correct / max(seen, 1):.3f}, val acc {acc:.4f}, "
            f"{seen / (time.time() - t_ep):.0f} img/s, {time.time() - t0:.0f}s total")
    calib = imgs[: min(len(imgs), recalibrate_images)]
    recalibrate_bn(model, (normalise(calib[i:i + 100], d.input) for i in range(0, len(calib), 100)))
    acc = evaluate(model, val)
    say(f"after BN recalibration: val acc {acc:.4f}")
    return model, {"val_top1": acc, "seconds": round(time.time() - t0, 1), "train_images": len(imgs),
                   "epochs": epochs, "torch": torch.__version__}


def _resize(imgs, height: int, width: int):
    from PIL import Image

    if imgs.shape[1:3] == (height, width):
        return imgs
    return np.stack([np.asarray(Image.fromarray(im).resize((width, height), Image.Resampling.BILINEAR))
                     for im in imgs])


def training_parser(description: str, *, out: str, definition: str, train_images: int, epochs: int,
                    batch: int, threads: int) -> argparse.ArgumentParser:
    """The options every demo trainer takes (each task's script adds its own)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=out, help="folder with the definition")
    ap.add_argument("--definition", default=definition)
    ap.add_argument("--train-images", type=int, default=train_images)
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=threads)
    return ap


def scene_task_definition(args, task):
    """Seed torch and load the definition a scene trainer (segmentation, detection) trains:
    ``(folder, definition)``; refuses another task or a non-square input (the scene renderer draws
    square images)."""
    import torch

    from ..definition import load_definition

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    d = load_definition(out / args.definition, check_files=False)
    if d.task != task:
        raise SystemExit(f"{out / args.definition}: task must be {task.value}")
    if d.input.height != d.input.width:
        raise SystemExit("the scene renderer draws square images: give input height == width")
    return out, d


def main(argv=None) -> None:
    ap = training_parser(__doc__.splitlines()[0], out="examples/shapes", definition="shapes.yaml",
                         train_images=24000, epochs=6, batch=96, threads=2)
    args = ap.parse_args(argv)

    from ..architectures.weights import save_weights
    from ..definition import load_definition

    out = Path(args.out)
    d = load_definition(out / args.definition, check_files=False)
    model, summary = train_model(d, train_images=args.train_images, epochs=args.epochs, batch=args.batch,
                                 lr=args.lr, seed=args.seed, threads=args.threads,
                                 say=lambda m: print(m, flush=True))
    weights = out / (d.weights or "shapes.safetensors")
    save_weights(model, weights, metadata={"val_top1": f"{summary['val_top1']:.4f}", "seed": str(args.seed)})
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
