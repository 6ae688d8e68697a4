"""One conversion in its own process, so a native converter crash fails one target only.

    python -m mobiledeploy.pipeline.worker REQUEST.json

The request names the definition, the target profile, the temporary output path and where to
write the result (facts for the manifest, or the error).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def convert_one(req: dict) -> dict:
    from ..backends.base import ConvertContext
    from ..backends.registry import get_backend
    from ..definition import load_definition
    from ..images import load_batch
    from ..targets import ResolvedTarget

    d = load_definition(req["definition"], check_files=False)
    target = ResolvedTarget.from_record(req["target"])
    backend = get_backend(target.backend)
    calib = load_batch(d, "calibration")
    ctx = ConvertContext(definition=d, workdir=Path(req["workdir"]), calibration=calib)
    return backend.convert(ctx, target, Path(req["out"]))


def main() -> int:
    import os
    import warnings

    from .lifeline import die_with_parent

    die_with_parent()  # a killed build takes its converters with it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore")
    req = json.loads(Path(sys.argv[1]).read_text())
    result_path = Path(req["result"])
    if os.environ.get("MOBILEDEPLOY_FAULT_CRASH") == req["target"]["target"]:
        # fault injection for tests: a real native crash of this converter process
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    try:
        facts = convert_one(req)
        result = {"ok": True, "facts": facts}
        code = 0
    except Exception as exc:  # reported to the parent; the build goes on with other targets
        from ..errors import MobileDeployError

        user = isinstance(exc, MobileDeployError) and exc.exit_code == 2
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result = {"ok": False, "user_error": user, "error": f"{type(exc).__name__}: {msg}",
                  "traceback": traceback.format_exc()}
        code = 2 if user else 3
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    tmp.replace(result_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
