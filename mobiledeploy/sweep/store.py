"""A content-addressed store of step outputs that several machines can share.

A folder by default; any fsspec URL otherwise (``s3://bucket/cache``, ``gcs://...``,
``file:///...``). Entries are named by the step's key: ``steps/<key>.tar`` holds the outputs and
``steps/<key>.json`` the step's record, written last, so an entry is complete when its record
exists. Writes go to a temporary name and are renamed; two machines writing the same key write the
same content, and the last rename wins.
"""

from __future__ import annotations

import json
import os
import tarfile
import uuid
from pathlib import Path


class Store:
    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        self._fs = None
        if "://" not in self.location:  # workers run elsewhere (another cwd, another process)
            self.location = str(Path(self.location).expanduser().resolve())
        if "://" in self.location:  # file:// too: the same code path as an object store
            self._fs_url()

    def _fs_url(self) -> None:
        from .._deps import require

        require("fsspec", "a sweep cache given as a URL")
        import fsspec

        self._fs, self._root = fsspec.core.url_to_fs(self.location)

    def describe(self) -> str:
        return self.location

    # -- primitives ---------------------------------------------------------------------------
    def _path(self, rel: str) -> str:
        if self._fs is None:
            return str(Path(self.location) / rel)
        return self._root.rstrip("/") + "/" + rel

    def exists(self, rel: str) -> bool:
        if self._fs is None:
            return Path(self._path(rel)).exists()
        return self._fs.exists(self._path(rel))

    def put_file(self, local: Path, rel: str) -> None:
        dest = self._path(rel)
        tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
        if self._fs is None:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            import shutil

            shutil.copyfile(local, tmp)
            os.replace(tmp, dest)
        else:
            self._fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
            self._fs.put_file(str(local), tmp)
            self._fs.mv(tmp, dest)

    def get_file(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + f".tmp-{uuid.uuid4().hex[:8]}")
        if self._fs is None:
            import shutil

            shutil.copyfile(self._path(rel), tmp)
        else:
            self._fs.get_file(self._path(rel), str(tmp))
        os.replace(tmp, local)

    def put_json(self, rel: str, obj) -> None:
        dest = self._path(rel)
        data = json.dumps(obj, indent=1, sort_keys=True)
        if self._fs is None:
            from ..bundle import write_bytes_atomic

            write_bytes_atomic(Path(dest), data.encode())
        else:
            tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
            self._fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
            self._fs.pipe_file(tmp, data.encode())
            self._fs.mv(tmp, dest)

    def get_json(self, rel: str):
        try:
            if self._fs is None:
                return json.loads(Path(self._path(rel)).read_text())
            return json.loads(self._fs.cat_file(self._path(rel)))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def remove(self, rel: str) -> None:
        try:
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

    def commit(self, key: str, record: dict, outputs: Path | None = None) -> None:
        """Store a step's outputs (a folder, archived) and then its record."""
        if outputs is not None:
            archive = outputs.with_name(outputs.name + ".tar")
            with tarfile.open(archive, "w") as tar:
                for p in sorted(outputs.rglob("*")):
                    tar.add(p, arcname=p.relative_to(outputs).as_posix(), recursive=False)
            self.put_file(archive, f"steps/{key[:2]}/{key}.tar")
            archive.unlink()
        self.put_json(f"steps/{key[:2]}/{key}.json", record)

    def fetch(self, key: str, dest: Path, members: str | None = None) -> Path:
        """Unpack a step's outputs into ``dest`` (only paths under ``members`` when given)."""
        archive = dest.with_name(dest.name + f".{uuid.uuid4().hex[:8]}.tar")
        self.get_file(f"steps/{key[:2]}/{key}.tar", archive)
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
