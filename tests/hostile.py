"""Running vrconvert on hostile files the way an attacker's victim would, but bounded and observed.

`run_cases` starts ONE worker interpreter that imports vrconvert, numpy, torch, h5py and Keras (numpy
backend) once, then forks a child per case. Each child runs under an 8 GB address-space limit
(RLIMIT_AS) and a deadline (SIGALRM), in its own folder with its own $TMPDIR, and runs the CLI's
`main()` exactly as the `vrconvert` command does (or a `module:function` through the CLI's error
table). The worker reports per case: exit status or signal, stdout, stderr, seconds, peak RSS
(`wait4`), and every file left in the case folder. Forking after the imports makes a case cost
milliseconds instead of seconds of start-up, so hundreds of cases fit in a test.

Also here: a minimal hand-written torch zip writer, so tests control every offset, size, stride,
numel and dtype in a tensor record (torch.save would refuse to write hostile ones).
"""

from __future__ import annotations

import atexit
import json
import struct
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

AS_LIMIT = 8 << 30  # the review's 8 GB address-space limit
TESTS = Path(__file__).parent

WORKER = textwrap.dedent(
    r"""
    import json, os, resource, signal, sys, time
    os.environ["KERAS_BACKEND"] = "numpy"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.modules.setdefault("tensorflow", None)
    import importlib, numpy, h5py, keras, torch, safetensors.numpy
    sys.path.insert(0, sys.argv[2])
    from vrconvert.cli.main import main
    from vrconvert.cli.errors import run_guarded
    import vrconvert.converter.formats.keras_io, vrconvert.converter.formats.checkpoint
    print("READY", flush=True)
    for line in sys.stdin:
      for case in json.loads(line):
          folder = case["folder"]
          os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
          if case.get("prepare"):
              module, _, name = case["prepare"][0].partition(":")
              getattr(importlib.import_module(module), name)(*case["prepare"][1:])
          before = set(os.listdir(folder))
          start = time.monotonic()
          pid = os.fork()
          if pid == 0:
              try:
                  os.chdir(folder)
                  os.environ["TMPDIR"] = os.path.join(folder, "tmp")
                  os.environ.update(case.get("env", {}))
                  resource.setrlimit(resource.RLIMIT_AS, (case["as_limit"], case["as_limit"]))
                  if case.get("fsize"):
                      resource.setrlimit(resource.RLIMIT_FSIZE, (case["fsize"], case["fsize"]))
                  for fd, name in ((1, "stdout"), (2, "stderr")):
                      os.dup2(os.open(os.path.join(folder, "." + name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
                  signal.alarm(case["deadline"])
                  if case.get("call"):
                      module, _, name = case["call"][0].partition(":")
                      fn = getattr(importlib.import_module(module), name)
                      run_guarded(lambda: fn(*case["call"][1:]))
                  else:
                      sys.argv = ["vrconvert", *case["argv"]]
                      main()
                  code = 0
              except SystemExit as exc:
                  code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
              except BaseException:
                  import traceback
                  traceback.print_exc()
                  code = 99
              sys.stdout.flush(); sys.stderr.flush()
              os._exit(code)
          if case.get("kill_after"):
              time.sleep(case["kill_after"])
              os.kill(pid, signal.SIGTERM)
          _, status, usage = os.wait4(pid, 0)
          seconds = time.monotonic() - start
          read = lambda name: open(os.path.join(folder, "." + name), errors="replace", newline="").read()
          left = sorted(p for p in os.listdir(folder) if p not in before and p not in (".stdout", ".stderr", "tmp"))
          left += ["tmp/" + p for p in os.listdir(os.path.join(folder, "tmp"))]
          result = {
              "id": case["id"],
              "code": os.waitstatus_to_exitcode(status),
              "stdout": read("stdout")[-4000:],
              "stderr": read("stderr")[-4000:],
              "seconds": seconds,
              "rss_mb": usage.ru_maxrss / 1024,
              "cpu_seconds": usage.ru_utime + usage.ru_stime,
              "new_files": left,
          }
          if case.get("cleanup"):
              for name in os.listdir(folder):
                  path = os.path.join(folder, name)
                  if os.path.isfile(path) or os.path.islink(path):
                      os.unlink(path)
          print(json.dumps(result), flush=True)
      print("DONE", flush=True)
    """
)


_WORKERS: list[tuple[subprocess.Popen, Path]] = []  # started once per test process, reused by every test


def _worker(index: int) -> tuple[subprocess.Popen, Path]:
    while len(_WORKERS) <= index:
        log = Path(tempfile.mkstemp(prefix="hostile-worker-", suffix=".log")[1])
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, "-", str(TESTS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log, "w"),  # noqa: SIM115 (lives as long as the worker)
            text=True,
            cwd="/",
        )
        assert proc.stdout.readline().strip() == "READY", log.read_text()[-3000:]
        atexit.register(proc.kill)
        atexit.register(log.unlink, missing_ok=True)
        _WORKERS.append((proc, log))
    return _WORKERS[index]


def run_cases(cases: list[dict], tmp_path: Path, workers: int = 1) -> dict[str, dict]:
    """Runs `cases` (dicts with id, folder, argv or call, optional prepare/env/fsize/kill_after/
    deadline/cleanup) in `workers` forking workers; returns the results by id."""
    for case in cases:
        case.setdefault("deadline", 60)
        case.setdefault("as_limit", AS_LIMIT)
        case["folder"] = str(case["folder"])
    shards = [cases[i::workers] for i in range(workers)]
    procs = [_worker(index) for index in range(len(shards))]
    for (proc, _), shard in zip(procs, shards, strict=True):
        proc.stdin.write(json.dumps(shard) + "\n")
        proc.stdin.flush()
    results = {}
    for proc, log in procs:
        for line in proc.stdout:
            if line.strip() == "DONE":
                break
            if line.startswith("{"):
                result = json.loads(line)
                results[result["id"]] = result
        else:
            _WORKERS.clear()
            raise AssertionError(f"the worker died ({proc.wait()}): {log.read_text()[-3000:]}")
    missing = [c["id"] for c in cases if c["id"] not in results]
    assert not missing, f"no result for {missing[:5]}"
    return results


def assert_refused(result: dict, *, contains: str | None = None, max_rss_mb: float | None = None) -> None:
    """Exit 2 with exactly one line on stderr (starting 'error: '), no traceback, nothing left behind."""
    err = result["stderr"]
    assert result["code"] == 2, (result["id"], result["code"], err[-2000:])
    assert err.count("\n") == 1 and err.startswith("error: "), (result["id"], err[-2000:])
    assert result["new_files"] == [], (result["id"], result["new_files"])
    if contains:
        assert contains in err, (result["id"], err)
    if max_rss_mb:
        assert result["rss_mb"] < max_rss_mb, (result["id"], result["rss_mb"])


# --- a hand-written torch zip -------------------------------------------------------------------------


def _uni(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


STORAGES = {"float32": "FloatStorage", "float16": "HalfStorage", "int64": "LongStorage", "int8": "CharStorage"}


def tensor_record(key: str, dtype: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """The pickle bytes torch writes for one tensor (a `_rebuild_tensor_v2` call on a storage)."""
    pid = _tuple([_uni("storage"), _global("torch", STORAGES[dtype]), _uni(key), _uni("cpu"), _int(numel)]) + b"Q"
    args = [pid, _int(offset), _tuple([_int(n) for n in size]), _tuple([_int(s) for s in stride]), b"\x89"]
    args.append(_global("collections", "OrderedDict") + b")R")
    return _global("torch._utils", "_rebuild_tensor_v2") + _tuple(args) + b"R"


def state_pickle(records: dict[str, bytes]) -> bytes:
    body = b"".join(_uni(k) + v for k, v in records.items())
    return b"\x80\x02}(" + body + b"u."


def write_torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes], extra: dict[str, bytes] | None = None):
    """A torch zip: archive/data.pkl, archive/data/KEY per storage (then `extra` members, in order)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
        z.writestr("archive/version", "3\n")


def state_zip(path: Path, state: dict, override: dict | None = None, extra: dict | None = None) -> None:
    """A torch zip of a numpy state dict, one storage per tensor; `override` maps a key to record
    fields (numel, offset, size, stride, dtype, storage bytes) to replace."""
    import numpy as np

    records, storages = {}, {}
    for index, (key, array) in enumerate(state.items()):
        array = np.require(array, requirements="C")  # (ascontiguousarray would make scalars 1-D)
        fields = {
            "dtype": str(array.dtype),
            "numel": array.size,
            "offset": 0,
            "size": array.shape,
            "stride": tuple(s // array.itemsize for s in array.strides),
            "data": array.tobytes(),
        }
        fields.update((override or {}).get(key, {}))
        records[key] = tensor_record(
            str(index), fields["dtype"], fields["numel"], fields["offset"], fields["size"], fields["stride"]
        )
        storages[str(index)] = fields["data"]
    write_torch_zip(path, state_pickle(records), storages, extra)
