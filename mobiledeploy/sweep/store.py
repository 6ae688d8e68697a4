"""A content-addressed store of step outputs that several machines can share.

A folder by default; any fsspec URL otherwise (``s3://bucket/cache`` through s3fs, ``gcs://...``,
``file:///...``). Entries are named by the step's key: ``steps/<key>.json`` is the step's record,
written last, so an entry is complete when its record exists; the outputs are an archive the
record names, written under a name of its own commit (``steps/<key>.<commit>.tar``) before it.

Atomic in the object-store sense: every object is written under a temporary key and then copied
(renamed) into place, so a reader sees a whole object or none. Two workers finishing the same step
each write their own archive and then the record; the record names the archive it goes with, so
whichever record is the last one written is a valid entry, and the loser's archive is removed.

An object store that cannot be reached, or refuses the credentials, is a ``StoreError`` (a user
error: one line naming the store, exit 2). Endpoint and credentials come the usual way for the
protocol (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, instance roles); nothing secret is part of ``describe()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tarfile
import uuid
from pathlib import Path

from ..errors import UserError

# bounded retries: an endpoint that went away fails the sweep in seconds (measured ~10 s against
# a stopped S3 endpoint here), not after botocore's default retries (~25 s)
_OPTIONS = {proto: {"config_kwargs": {"retries": {"max_attempts": 3, "mode": "standard"},
                                                     "connect_timeout": 5, "read_timeout": 60}}
            for proto in ("s3", "s3a")}


class StoreError(UserError):
    """The store cannot be read or written (unreachable, wrong credentials, refused)."""


def redact(location: str) -> str:
    """A store URL without credentials a user may have written into it (``s3://key:secret@b``)."""
    return re.sub(r"^([a-z0-9+.-]+://)[^/@]*@", r"\1***@", location, flags=re.I)


class Store:
    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        self._fs = None
        # buckets have no folders: nothing to create (s3fs' makedirs would create a bucket)
        self._flat = self.location.split("://", 1)[0].lower() in ("s3", "s3a", "gs", "gcs", "az", "abfs")
        if "://" not in self.location:  # workers run elsewhere (another cwd, another process)
            self.location = str(Path(self.location).expanduser().resolve())
        if "://" in self.location:  # file:// too: the same code path as an object store
            self._fs_url()

    def _fs_url(self) -> None:
        from .._deps import require

        require("fsspec", "a sweep cache given as a URL")
        import fsspec

        proto = self.location.split("://", 1)[0].lower()
        try:
            # a fresh filesystem object: credentials are read from the environment now, not
            # those of an earlier store of this process (fsspec caches instances by arguments)
            self._fs, self._root = fsspec.core.url_to_fs(self.location, skip_instance_cache=True,
                                                         **_OPTIONS.get(proto, {}))
        except ImportError as exc:  # a known protocol whose implementation is not installed
            pkg = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
            raise StoreError(f"--cache {redact(self.location)}: the {proto}:// protocol needs "
                             f"{pkg.get(proto, 'its fsspec implementation')} (pip install "
                             f"'mobiledeploy[sweep]' has s3fs)") from exc
        except (ValueError, TypeError) as exc:  # "Protocol not known: ..."
            raise StoreError(f"--cache {redact(self.location)}: {str(exc).splitlines()[0][:200]}; give a folder or "
                             "an fsspec URL such as s3://bucket/prefix or file:///path") from None

    def describe(self) -> str:
        return redact(self.location)

    @contextlib.contextmanager
    def _guard(self, what: str):
        """A store that fails (not a missing entry) is one StoreError line naming the store."""
        try:
            yield
        except (FileNotFoundError, StoreError):
            raise
        except Exception as exc:  # OSError, botocore's ClientError / EndpointConnectionError, ...
            if self._fs is None and not isinstance(exc, OSError):
                raise
            msg = " ".join(str(exc).split())[:240] or type(exc).__name__
            hint = (" (check AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the bucket)"
                    if self.location.startswith(("s3://", "s3a://")) else "")
            raise StoreError(f"cache {self.describe()}: cannot {what}: {type(exc).__name__}: {msg}{hint}") from None

    def check(self) -> None:
        """Write, read back and delete a probe object: wrong credentials or an unreachable
        endpoint are found before any step runs. A local folder needs no probe (its first write
        says it all, and no empty folder is left behind by a sweep refused later)."""
        if self._fs is None:
            return
        rel = f"probe/{uuid.uuid4().hex}.json"
        try:
            self.put_json(rel, {"probe": True})
        except FileNotFoundError as exc:  # s3fs: "The specified bucket does not exist"
            raise StoreError(f"cache {self.describe()}: cannot write: {' '.join(str(exc).split())[:200]}; "
                             "create the bucket (or folder) first") from None
        if self.get_json(rel) != {"probe": True}:
            raise StoreError(f"cache {self.describe()}: an object written was not read back; check the store")
        self.remove(rel)

    # -- primitives ---------------------------------------------------------------------------
    def _path(self, rel: str) -> str:
        if self._fs is None:
            return str(Path(self.location) / rel)
        return self._root.rstrip("/") + "/" + rel

    def exists(self, rel: str) -> bool:
        with self._guard(f"read {rel}"):
            if self._fs is None:
                return Path(self._path(rel)).exists()
            return self._fs.exists(self._path(rel))

    def _makedirs(self, dest: str) -> None:
        if not self._flat:
            self._fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)

    def _publish(self, tmp: str, dest: str) -> None:
        """Temporary key -> final key: an object store copies server-side (whole, at once) and
        deletes the temporary one."""
        self._fs.mv(tmp, dest)

    def put_file(self, local: Path, rel: str) -> None:
        dest = self._path(rel)
        tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
        with self._guard(f"write {rel}"):
            if self._fs is None:
                Path(dest).parent.mkdir(parents=True, exist_ok=True)
                import shutil

                shutil.copyfile(local, tmp)
                os.replace(tmp, dest)
            else:
                self._makedirs(dest)
                self._fs.put_file(str(local), tmp)
                self._publish(tmp, dest)

    def get_file(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + f".tmp-{uuid.uuid4().hex[:8]}")
        try:
            with self._guard(f"read {rel}"):
                if self._fs is None:
                    import shutil

                    shutil.copyfile(self._path(rel), tmp)
                else:
                    self._fs.get_file(self._path(rel), str(tmp))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def put_json(self, rel: str, obj) -> None:
        dest = self._path(rel)
        data = json.dumps(obj, indent=1, sort_keys=True)
        with self._guard(f"write {rel}"):
            if self._fs is None:
                from ..bundle import write_bytes_atomic

                write_bytes_atomic(Path(dest), data.encode())
            else:
                tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
                self._makedirs(dest)
                self._fs.pipe_file(tmp, data.encode())
                self._publish(tmp, dest)

    def get_json(self, rel: str):
        try:
            with self._guard(f"read {rel}"):
                if self._fs is None:
                    return json.loads(Path(self._path(rel)).read_text())
                return json.loads(self._fs.cat_file(self._path(rel)))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def remove(self, rel: str) -> None:
        try:
            with self._guard(f"remove {rel}"):
                if self._fs is None:
                    Path(self._path(rel)).unlink()
                else:
                    self._fs.rm_file(self._path(rel))
        except FileNotFoundError:
            pass

    # -- steps --------------------------------------------------------------------------------
    def record(self, key: str):
        """The record of a finished step, or None."""
        return self.get_json(f"steps/{key[:2]}/{key}.json")

    def commit(self, key: str, record: dict, outputs: Path | None = None) -> dict:
        """Store a step's outputs (a folder, archived under a name of this commit) and then its
        record, which names the archive. Returns the record as stored."""
        record = dict(record)
        mine = None
        if outputs is not None:
            archive = outputs.with_name(outputs.name + ".tar")
            with tarfile.open(archive, "w") as tar:
                for p in sorted(outputs.rglob("*")):
                    tar.add(p, arcname=p.relative_to(outputs).as_posix(), recursive=False)
            mine = f"steps/{key[:2]}/{key}.{uuid.uuid4().hex[:12]}.tar"
            self.put_file(archive, mine)
            archive.unlink()
            record["archive"] = mine
        rel = f"steps/{key[:2]}/{key}.json"
        self.put_json(rel, record)
        if mine is not None:  # another worker committed the same step after us: its entry stands
            last = self.get_json(rel)
            if last is not None and last.get("archive") != mine:
                self.remove(mine)
                return last
        return record

    def fetch(self, key: str, dest: Path, members: str | None = None) -> Path:
        """Unpack a step's outputs into ``dest`` (only paths under ``members`` when given)."""
        archive = dest.with_name(dest.name + f".{uuid.uuid4().hex[:8]}.tar")
        for attempt in range(3):  # a record replaced by another worker's commit meanwhile: read it again
            rec = self.record(key) or {}
            try:
                self.get_file(rec.get("archive") or f"steps/{key[:2]}/{key}.tar", archive)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        try:
            with tarfile.open(archive) as tar:
                chosen = [m for m in tar.getmembers()
                          if members is None or m.name == members or m.name.startswith(members.rstrip("/") + "/")]
                dest.mkdir(parents=True, exist_ok=True)
                tar.extractall(dest, members=chosen, filter="data")
        finally:
            archive.unlink(missing_ok=True)
        return dest

    # -- the project's input files, packed once per content ---------------------------------
    def put_inputs(self, pack: str, files: dict[str, Path]) -> None:
        """Pack ``files`` (archive name -> local path) as ``inputs/<pack>.tar`` unless present."""
        rel = f"inputs/{pack}.tar"
        if self.exists(rel):
            return
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "inputs.tar"
            with tarfile.open(archive, "w") as tar:
                for name in sorted(files):
                    tar.add(files[name], arcname=name, recursive=False)
            self.put_file(archive, rel)

    def fetch_inputs(self, pack: str, dest: Path) -> None:
        archive = dest.with_name(dest.name + ".tar")
        self.get_file(f"inputs/{pack}.tar", archive)
        try:
            with tarfile.open(archive) as tar:
                dest.mkdir(parents=True, exist_ok=True)
                tar.extractall(dest, filter="data")
        finally:
            archive.unlink(missing_ok=True)

    # -- leases: which process runs which step (progress, and the kill test) ------------------
    def lease(self, key: str, info: dict) -> None:
        self.put_json(f"running/{key}.json", info)

    def release(self, key: str) -> None:
        self.remove(f"running/{key}.json")

    def leases(self) -> dict[str, dict]:
        """The steps running now (key -> lease: pid, host, node, stage, started)."""
        with self._guard("list running/"):
            if self._fs is None:
                names = [p.name for p in Path(self._path("running")).glob("*.json")]
            else:
                try:
                    names = [p.rsplit("/", 1)[-1] for p in self._fs.ls(self._path("running"), detail=False,
                                                                        refresh=True)]
                except FileNotFoundError:
                    names = []
        out = {}
        for name in names:
            if name.endswith(".json"):
                info = self.get_json(f"running/{name}")
                if info is not None:  # released meanwhile
                    out[name.removesuffix(".json")] = info
        return out
