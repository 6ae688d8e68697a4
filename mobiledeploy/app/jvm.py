"""The JVM toolchain that compiles and runs the generated app's Android-free Kotlin core.

Kotlin comes from npm's ``kotlin-compiler`` package (the whole distribution, pinned), installed by
``make kotlin-toolchain`` into ``.tools/kotlin``; the JDK and JUnit 4 from Debian
(``openjdk-17-jdk-headless``, ``junit4``). ``MOBILEDEPLOY_KOTLINC`` names another ``kotlinc``.
Compiles are cached by a digest of every input (sources, compiler version, classpath).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

KOTLIN_VERSION = "2.4.20"
ENV = "MOBILEDEPLOY_KOTLINC"
TOOLS = Path(".tools") / "kotlin" / "node_modules" / "kotlin-compiler"
INSTALL = ("make kotlin-toolchain (npm kotlin-compiler@" + KOTLIN_VERSION + " into .tools/kotlin) and "
           "apt-get install openjdk-17-jdk-headless junit4")
JUNIT_JARS = (Path("/usr/share/java/junit4.jar"), Path("/usr/share/java/hamcrest-core.jar"))


class ToolchainMissing(Exception):
    """The Kotlin compiler or a JDK is not installed here (the message says how to install it)."""


def kotlinc() -> Path | None:
    """``$MOBILEDEPLOY_KOTLINC``, else ``.tools/kotlin`` in the working directory or beside the
    mobiledeploy sources; None when there is none. ``none`` turns the JVM off (ToolchainMissing):
    validate then runs no code from the bundle's app."""
    env = os.environ.get(ENV)
    if env is not None and env.strip().lower() in ("", "none"):
        raise ToolchainMissing(f"turned off ({ENV}={env!r}): the bundle's app code is not run")
    if env:
        return Path(env)
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        cand = root / TOOLS / "bin" / "kotlinc"
        if cand.is_file():
            return cand
    return None


def java() -> Path | None:
    """The ``java`` launcher: ``$JAVA_HOME/bin/java`` or the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return Path(home) / "bin" / "java"
    found = shutil.which("java")
    return Path(found) if found else None


def toolchain() -> tuple[Path, Path, Path]:
    """(kotlinc, java, kotlin-stdlib.jar), or ToolchainMissing naming the install command."""
    kc, jv = kotlinc(), java()
    if kc is None or not kc.is_file():
        raise ToolchainMissing(f"no Kotlin compiler ({ENV} or .tools/kotlin); install: {INSTALL}")
    if jv is None:
        raise ToolchainMissing(f"no java on PATH; install: {INSTALL}")
    stdlib = kc.resolve().parent.parent / "lib" / "kotlin-stdlib.jar"
    if not stdlib.is_file():
        raise ToolchainMissing(f"{stdlib}: missing beside {kc}; reinstall: {INSTALL}")
    return kc, jv, stdlib


def junit_classpath() -> list[Path]:
    """JUnit 4 and Hamcrest (Debian's junit4), or ToolchainMissing."""
    missing = [p for p in JUNIT_JARS if not p.is_file()]
    if missing:
        raise ToolchainMissing(f"{missing[0]}: not installed; install: {INSTALL}")
    return list(JUNIT_JARS)


def compiler_version(kc: Path) -> str:
    """The compiler's version (its build.txt, else the folder it lives in): part of cache keys."""
    build = kc.resolve().parent.parent / "build.txt"
    try:
        return build.read_text().strip()
    except OSError:
        return str(kc.resolve())


def compile_kotlin(sources: dict[str, bytes], cache: Path, classpath: list[Path] = (),
                   timeout: int = 900) -> tuple[Path, bool, float]:
    """Compile ``sources`` ({name: text}) into a jar under ``cache``, keyed by every input.

    Returns (jar, cached, seconds). A compile error raises RuntimeError with kotlinc's first errors.
    """
    import time

    kc, _jv, _stdlib = toolchain()
    h = hashlib.sha256()
    h.update(compiler_version(kc).encode() + b"\0")
    for cp in classpath:
        h.update(f"cp:{Path(cp).name}:{Path(cp).stat().st_size}\0".encode())
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + hashlib.sha256(sources[name]).digest())
    key = h.hexdigest()[:24]
    jar = Path(cache) / f"{key}.jar"
    if jar.is_file():
        return jar, True, 0.0
    Path(cache).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-kt-") as tmp:
        files = []
        for name, text in sources.items():
            f = Path(tmp) / "src" / name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(text)
            files.append(str(f))
        out = Path(tmp) / "out.jar"
        cmd = [str(kc), "-nowarn", "-jvm-target", "17", "-d", str(out), *files]
        if classpath:
            cmd[1:1] = ["-cp", os.pathsep.join(str(p) for p in classpath)]
        env = {**os.environ, "JAVA_OPTS": os.environ.get("JAVA_OPTS", "-Xss4m")}
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if res.returncode != 0 or not out.is_file():
            errors = [ln for ln in (res.stderr + res.stdout).splitlines() if "error:" in ln] or \
                (res.stderr + res.stdout).strip().splitlines()[-3:]
            raise RuntimeError("kotlinc: " + " | ".join(e.replace(tmp + "/src/", "") for e in errors[:3]))
        tmp_jar = jar.with_name(jar.name + f".{os.getpid()}.tmp")
        shutil.copyfile(out, tmp_jar)
        tmp_jar.replace(jar)  # atomic: a concurrent reader sees the whole jar or none
    return jar, False, round(time.monotonic() - t0, 2)


def java_command(jar: Path, main_class: str, classpath: list[Path] = ()) -> list[str]:
    """The command running ``main_class`` from ``jar`` with Kotlin's stdlib (and ``classpath``)."""
    _kc, jv, stdlib = toolchain()
    cp = os.pathsep.join(str(p) for p in (jar, stdlib, *classpath))
    # one short-lived process: no JIT tiers beyond C1 needed, and a small heap is plenty
    return [str(jv), "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", cp, main_class]


def core_sources(project: Path) -> dict[str, bytes]:
    """The Android-free core of a generated project as found: every .kt under
    ``app/src/main/java/**/core/`` ({relative path: bytes})."""
    main = Path(project) / "app" / "src" / "main" / "java"
    found = {p.relative_to(main).as_posix(): p.read_bytes() for p in sorted(main.rglob("core/*.kt"))}
    return found


def core_test_sources(project: Path) -> dict[str, bytes]:
    """The core's JVM unit tests (``app/src/test/java/**/core/*.kt``)."""
    test = Path(project) / "app" / "src" / "test" / "java"
    return {"test/" + p.relative_to(test).as_posix(): p.read_bytes() for p in sorted(test.rglob("core/*.kt"))}


def run_unit_tests(project: Path, cache: Path, timeout: int = 600) -> dict:
    """Compile the project's core and its JVM unit tests, run them with JUnit 4.

    Returns {"ok", "tests", "failures", "output", "compile_seconds", "cached", "run_seconds"}.
    """
    import re
    import time

    sources = {**core_sources(project), **core_test_sources(project)}
    junit = junit_classpath()
    jar, cached, secs = compile_kotlin(sources, cache, junit)
    classes = [name.removeprefix("test/").removesuffix(".kt").replace("/", ".")
               for name in sources if name.startswith("test/")]
    t0 = time.monotonic()
    res = subprocess.run(java_command(jar, "org.junit.runner.JUnitCore", junit)[:-1]
                         + ["org.junit.runner.JUnitCore", *classes],
                         capture_output=True, text=True, timeout=timeout)
    out = res.stdout + res.stderr
    ok = re.search(r"OK \((\d+) tests?\)", out)
    bad = re.search(r"Tests run: (\d+),\s+Failures: (\d+)", out)
    return {"ok": res.returncode == 0 and ok is not None,
            "tests": int(ok.group(1)) if ok else int(bad.group(1)) if bad else 0,
            "failures": int(bad.group(2)) if bad else 0, "output": out,
            "compile_seconds": secs, "cached": cached, "run_seconds": round(time.monotonic() - t0, 2)}
