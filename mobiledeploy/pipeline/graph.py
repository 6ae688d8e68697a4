"""The build as a graph of steps with declared inputs and outputs.

A step's key is the hash of its inputs (file hashes, options, toolchain versions). A step reruns
only when its key changed or an output is missing or modified, and ``explain`` says which.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle import STATE_DIR, write_json_atomic
from ..digests import path_sha as sha256_path


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Step:
    """One unit of work: ``inputs`` name -> hash/value, ``outputs`` bundle-relative paths."""

    name: str
    inputs: dict[str, object]
    outputs: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return digest(self.inputs)


class Cache:
    """Per-step records in OUT/.mobiledeploy/steps.json, rewritten atomically after each step."""

    def __init__(self, out_dir: Path, enabled: bool = True):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / STATE_DIR / "steps.json"
        self.enabled = enabled
        try:
            records = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON: an empty cache
            records = {}
        # a foreign or damaged record (a list, entries without a key) is an empty cache too
        self.records: dict = ({k: v for k, v in records.items() if isinstance(v, dict) and
                              isinstance(v.get("key"), str) and isinstance(v.get("outputs", {}), dict)
                              and isinstance(v.get("inputs", {}), dict) and isinstance(v.get("facts", {}), dict)}
                        if isinstance(records, dict) else {})

    def check(self, step: Step) -> tuple[bool, str]:
        """(fresh, reason): whether the step can be skipped, and why it runs or not."""
        if not self.enabled:
            return False, "--no-cache"
        rec = self.records.get(step.name)
        if rec is None:
            return False, "never built here"
        if rec["key"] != step.key:
            old = rec.get("inputs", {})
            changed = [k for k in sorted(set(old) | set(step.inputs)) if old.get(k) != step.inputs.get(k)]
            detail = []
            for k in changed[:4]:
                a, b = old.get(k), step.inputs.get(k)
                if isinstance(a, str) and isinstance(b, str) and len(a) < 40 and len(b) < 40:
                    detail.append(f"{k}: {a} -> {b}")
                else:
                    detail.append(f"{k} changed")
            return False, "; ".join(detail) or "inputs changed"
        for rel, sha in rec.get("outputs", {}).items():
            p = self.out_dir / rel
            if not p.resolve().is_relative_to(self.out_dir.resolve()):
                return False, f"output {rel} is outside the bundle"
            if not p.exists():
                return False, f"output {rel} is missing"
            if sha256_path(p) != sha:
                return False, f"output {rel} was modified"
        return True, "up to date (inputs unchanged, outputs intact)"

    def record(self, step: Step, outputs: dict[str, str] | None = None, facts: dict | None = None) -> None:
        outs = outputs if outputs is not None else {o: sha256_path(self.out_dir / o) for o in step.outputs}
        self.records[step.name] = {"key": step.key, "inputs": step.inputs, "outputs": outs,
                                   "facts": facts or {}}
        write_json_atomic(self.path, self.records)

    def facts(self, name: str) -> dict:
        return self.records.get(name, {}).get("facts", {})

    def forget(self, name: str) -> None:
        if self.records.pop(name, None) is not None:
            write_json_atomic(self.path, self.records)
