#!/usr/bin/env python
"""Fuzz the file loaders: model and checkpoint ``.npz``, IDX, and ``train --resume``.

Valid seed files are written first (small models with every built-in layer
kind and optimiser slots, checkpoints, IDX files of every element type, plain
and gzip, and a checkpoint written by ``fastconv train``); each case then
mutates one of them (byte flips, truncation, npy-header edits, member swaps,
huge declared shapes and architectures, random JSON values anywhere in the
metadata, zip-level damage) and loads it. The loaders' contract:

* ``load_model`` / ``load_checkpoint`` / ``read_idx`` return normally or
  raise ``ValueError`` whose message names the file;
* ``fastconv train --resume`` returns exit status 0, 1 or 2 without a
  traceback, and a run that succeeds tested every image it says it tested.

Anything else (another exception type, a message without the file name, a
case slower than ``--case-seconds``, a MemoryError under the ``--mem-mb``
address-space cap) is a failure; failing inputs are kept in ``--keep``.

Usage::

    python scripts/fuzz_loaders.py --cases 100000 --seed 1 --keep fuzz-failures
    python scripts/fuzz_loaders.py --cases 300 --kinds idx,model    # quick

Exit status 0 when every case kept the contract, 1 otherwise.
"""

import argparse
import contextlib
import copy
import gzip
import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

import numpy as np

from fastconv import cli, nn
from fastconv import datasets as ds

KINDS = ("model", "checkpoint", "idx", "resume")
# share of the cases per kind (resume runs a short training, so it gets fewer)
WEIGHTS = {"model": 0.42, "checkpoint": 0.36, "idx": 0.20, "resume": 0.02}


LOADED = [0]  # successful loads (mutations that left a valid file), for the summary


class CaseTimeout(Exception):
    """Raised by the per-case alarm."""


def _alarm(signum, frame):
    raise CaseTimeout()


# --------------------------------------------------------------------------- #
# seed files
# --------------------------------------------------------------------------- #


def _idx_bytes(arr, type_byte):
    dt = ds._IDX_DTYPES[type_byte]
    head = bytes([0, 0, type_byte, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(dt).tobytes()


def make_seeds(root, kinds=KINDS):
    """Valid files to mutate: {"model": [bytes], "checkpoint": [...], "idx": [...], "resume": ...}."""
    rng = np.random.default_rng(0)
    seeds = {"model": [], "checkpoint": [], "idx": []}
    x = rng.random((6, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 6)
    nets = [
        (lambda: nn.Sequential([nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                                nn.MaxPool2d(2), nn.Dropout(0.25, rng=1), nn.Flatten(),
                                nn.Linear(32, 3)]), "adam"),
        (lambda: nn.Sequential([nn.Conv2d(1, 2, (3, 2), stride=2, groups=1, bias=False),
                                nn.Tanh(), nn.Softmax(axis=1), nn.AvgPool2d(2), nn.Flatten(),
                                nn.Linear(4, 3), nn.BatchNorm1d(3)]), "sgd"),
        (lambda: nn.Sequential([nn.Sequential([nn.Conv2d(1, 1, 1), nn.Sigmoid()]), nn.Flatten(),
                                nn.Linear(64, 3, dtype=np.float32)]), "rmsprop"),
    ]
    opts = {"adam": lambda m: "adam",
            "sgd": lambda m: __import__("fastconv").optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
            "rmsprop": lambda m: __import__("fastconv").optim.RMSprop(m.parameters(), momentum=0.5)}
    for i, (make, opt) in enumerate(nets):
        model = make()
        model.compile(optimizer=opts[opt](model), loss="cross_entropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=3, epochs=1, verbose=0, seed=0)
        p = root / f"seed-model-{i}.npz"
        model.save(p)
        seeds["model"].append(p.read_bytes())
        model.save(p, include_optimizer=False)
        seeds["model"].append(p.read_bytes())
        p = root / f"seed-ckpt-{i}.npz"
        nn.save_checkpoint(p, model, model.optimizer, i, rng_state=np.random.default_rng(i),
                           extra={"history": [{"loss": 1.0}], "note": "x" * i})
        seeds["checkpoint"].append(p.read_bytes())
    for type_byte, shape in ((0x08, (3, 4, 5)), (0x08, (7,)), (0x09, (2, 3)), (0x0B, (4, 2)),
                             (0x0C, (3,)), (0x0D, (2, 2, 2)), (0x0E, (1, 5))):
        arr = rng.integers(-100, 100, shape)
        data = _idx_bytes(arr, type_byte)
        seeds["idx"].append(data)
        seeds["idx"].append(gzip.compress(data))
    if "resume" in kinds:
        seeds["resume"] = _resume_seed(root)
    return seeds


def _resume_seed(root):
    """A tiny MNIST-layout dataset and a checkpoint that 'fastconv train' wrote on it."""
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    n_train, n_test = 12, 6
    arrays = [rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 10, n_train),
              rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test)]
    hashes = {}
    for name, arr in zip(ds.MNIST_FILES, arrays):
        blob = _idx_bytes(arr, 0x08)
        (data / name).write_bytes(blob)
        hashes[name] = hashlib.sha256(blob).hexdigest()
    # the CLI verifies MNIST's checksums; in this process the fake set is "MNIST"
    ds.MNIST_SHA256 = hashes
    ckpt = root / "seed-cli.npz"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = cli.main(["train", "--data-dir", str(data), "--no-download", "-q", "--epochs", "1",
                       "--batch-size", "4", "--augment", "none", "--checkpoint", str(ckpt)])
    if rc != 0:
        raise RuntimeError(f"could not write the resume seed (exit {rc})")
    return {"data": data, "ckpt": ckpt.read_bytes(), "n_test": n_test}


# --------------------------------------------------------------------------- #
# npz mutations
# --------------------------------------------------------------------------- #


def _members(blob):
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return [(info.filename, z.read(info)) for info in z.infolist()]


def _pack(members, compress=False):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def _npy(arr):
    b = io.BytesIO()
    np.lib.format.write_array(b, np.asarray(arr), allow_pickle=False)
    return b.getvalue()


def _npy_header(shape, descr, fortran=False, version=1):
    d = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}).encode()
    pad = (-(10 + len(d) + 1)) % 64
    d += b" " * pad + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + len(d).to_bytes(2, "little") + d
    return b"\x93NUMPY\x02\x00" + len(d).to_bytes(4, "little") + d


def _split_npy(data):
    major = data[6]
    hlen = int.from_bytes(data[8:10] if major == 1 else data[8:12], "little")
    off = (10 if major == 1 else 12) + hlen
    return data[:off], data[off:]


HUGE_INTS = [0, -1, 1, 2, 3, 2**31 - 1, 2**31, 2**32 + 1, 2**63, 2**64, 10**9, 40_000_000,
             10**30, -(2**63), 10**400]
WEIRD = [None, True, False, "", "x", "float16", "same", "Conv2d", "Sequential", [], {}, [1],
         [1, 2, 3], [[]], {"class": "ReLU"}, 0.5, -0.0, 1e308, float("inf"), float("nan"), -1e-9,
         "adam", "he_normal", "PCG64"]


def _random_value(rng, depth=0):
    r = rng.random()
    if r < 0.35:
        return HUGE_INTS[rng.integers(len(HUGE_INTS))]
    if r < 0.7 or depth > 2:
        return copy.deepcopy(WEIRD[rng.integers(len(WEIRD))])  # never share a mutable
    if r < 0.85:
        return [_random_value(rng, depth + 1) for _ in range(rng.integers(0, 4))]
    return {str(_random_value(rng, 3)): _random_value(rng, depth + 1) for _ in range(rng.integers(0, 3))}


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate_json(meta, rng):
    meta = copy.deepcopy(meta)
    paths = list(_paths(meta))[1:]
    for _ in range(rng.integers(1, 4)):
        path = paths[rng.integers(len(paths))]
        parent = meta
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        op = rng.random()
        try:
            if op < 0.6:
                parent[key] = _random_value(rng)
            elif op < 0.75:
                del parent[key]
            elif op < 0.85 and isinstance(parent, dict):
                parent[str(_random_value(rng, 3))] = _random_value(rng)
            elif isinstance(parent, list):
                parent.append(copy.deepcopy(parent[key]))
            else:
                parent[key] = [parent[key]]
        except (KeyError, IndexError, TypeError):
            pass
        paths = list(_paths(meta))[1:] or [()]
        if paths == [()]:
            break
    return meta


def _architecture_bomb(meta, rng):
    """Configs that would allocate or loop without bound if trusted."""
    meta = copy.deepcopy(meta)
    r = rng.integers(6)
    big = int(rng.choice([40_000_000, 10**9, 2**31 - 1, 2**40]))
    if r == 0:
        layers = [{"class": "Conv2d", "config": {"in_channels": 1, "out_channels": big, "kernel_size": 5}}]
    elif r == 1:
        layers = [{"class": "Linear", "config": {"in_features": big, "out_features": big}}]
    elif r == 2:
        layers = [{"class": "BatchNorm2d", "config": {"num_features": big}}]
    elif r == 3:
        layers = [{"class": "ReLU"}] * int(rng.integers(1000, 40000))
    elif r == 4:  # nested deeper than json.dumps recurses: build the text
        depth = int(rng.integers(30, 5000))
        meta["model"] = None
        text = json.dumps(meta)
        nested = '{"class": "Sequential", "config": {"layers": [' * depth + '{"class": "ReLU"}' \
            + "]}}" * depth
        return text.replace('"model": null', '"model": ' + nested)
    else:
        layers = [{"class": "Conv2d", "config": {"in_channels": 1, "out_channels": 1,
                                                 "kernel_size": [big, big]}}]
    meta["model"] = {"class": "Sequential", "config": {"layers": layers}}
    return json.dumps(meta)


def mutate_npz(blob, rng):
    """One mutated variant of a valid fastconv .npz."""
    op = rng.integers(10)
    if op == 0:  # byte flips anywhere
        data = bytearray(blob)
        for _ in range(rng.integers(1, 9)):
            data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
        return bytes(data)
    if op == 1:  # truncation
        return blob[:rng.integers(len(blob))]
    members = _members(blob)
    names = [n for n, _ in members]
    meta_i = names.index("__meta__.npy")
    meta = json.loads(np.lib.format.read_array(io.BytesIO(members[meta_i][1])).tobytes())
    if op in (2, 3, 4):  # JSON values anywhere in the metadata
        new = _mutate_json(meta, rng)
        text = json.dumps(new).encode()
        members[meta_i] = ("__meta__.npy", _npy(np.frombuffer(text, np.uint8)))
    elif op == 5:  # an architecture that must not be trusted
        text = _architecture_bomb(meta, rng).encode()
        members[meta_i] = ("__meta__.npy", _npy(np.frombuffer(text, np.uint8)))
    elif op == 6:  # npy header edits: shape, dtype, order, version
        i = int(rng.integers(len(members)))
        name, data = members[i]
        _, body = _split_npy(data)
        shape = [int(rng.choice([0, 1, 2, 3, 8, 10**9, 2**40, 2**62])) for _ in range(rng.integers(0, 4))]
        if rng.random() < 0.5:
            shape = list(np.lib.format.read_array_header_1_0(io.BytesIO(data[8:]))[0]) \
                if data[6] == 1 else shape
            if shape and rng.random() < 0.7:
                shape[rng.integers(len(shape))] = int(rng.choice([0, 7, 10**9, 2**40]))
        descr = str(rng.choice(["<f4", ">f4", "<f8", "<i8", "|u1", "<U3", "|O", "<c8", "|V8",
                                "<f2", "|b1", "<m8"]))
        header = _npy_header(shape, descr, bool(rng.random() < 0.2), int(rng.choice([1, 2])))
        members[i] = (name, header + body)
    elif op == 7:  # member swaps, renames, deletions, duplicates
        r = rng.integers(4)
        i, j = rng.integers(len(members), size=2)
        if r == 0:
            members[i], members[j] = (members[i][0], members[j][1]), (members[j][0], members[i][1])
        elif r == 1:
            del members[i]
        elif r == 2:
            members.append(members[i])
        else:
            members[i] = (members[i][0].replace("model/", "optimizer/").replace("0.", "9."), members[i][1])
    elif op == 8:  # extra members: pickled object, huge declared, non-npy
        r = rng.integers(3)
        if r == 0:
            members.append(("zzz.npy", _npy_header((1,), "|O") + b"\x80\x04N."))
        elif r == 1:
            members.append(("model/extra.npy", _npy_header((10**9,), "<f4") + b"\x00" * 64))
        else:
            members.append(("readme.txt", b"hello"))
    else:  # deflate everything, then maybe damage the compressed bytes
        blob = _pack(members, compress=True)
        if rng.random() < 0.5:
            data = bytearray(blob)
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
            blob = bytes(data)
        return blob
    return _pack(members, compress=bool(rng.random() < 0.2))


# --------------------------------------------------------------------------- #
# IDX mutations
# --------------------------------------------------------------------------- #


def mutate_idx(blob, rng):
    gz = blob[:2] == b"\x1f\x8b"
    raw = gzip.decompress(blob) if gz else blob
    op = rng.integers(7)
    if op == 0 and gz:  # damage the compressed bytes
        data = bytearray(blob)
        for _ in range(rng.integers(1, 6)):
            data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
        return bytes(data)
    if op == 1:
        out = raw[:rng.integers(len(raw) + 1)]
    elif op == 2:
        out = raw + bytes(rng.integers(0, 256, rng.integers(1, 50), dtype=np.uint8))
    elif op == 3:  # magic / type / ndim
        data = bytearray(raw)
        data[rng.integers(4)] = int(rng.integers(256))
        out = bytes(data)
    elif op == 4:  # dimension sizes, including huge ones
        ndim = raw[3]
        data = bytearray(raw)
        k = 4 + 4 * int(rng.integers(max(ndim, 1)))
        data[k:k + 4] = int(rng.choice([0, 1, 2**31, 2**32 - 1, 10**6, 60000])).to_bytes(4, "big")
        out = bytes(data)
    elif op == 5:  # a bomb: a tiny header declaring a lot, then a run of zeros
        n = int(rng.choice([10**6, 10**8, 2**32 - 1]))
        out = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + b"\x00" * int(rng.integers(0, 10**5))
    else:
        data = bytearray(raw)
        for _ in range(rng.integers(1, 6)):
            data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
        out = bytes(data)
    if gz or rng.random() < 0.3:
        out = gzip.compress(out, compresslevel=1)
    return out


# --------------------------------------------------------------------------- #
# cases
# --------------------------------------------------------------------------- #


def _expect_named(exc, path):
    """None if ``exc`` keeps the contract (ValueError naming the file), else a reason."""
    if type(exc) is not ValueError and not isinstance(exc, ValueError):
        return f"{type(exc).__name__}: {exc}"
    if str(path) not in str(exc):
        return f"ValueError without the file name: {exc}"
    return None


def run_npz_case(kind, blob, path):
    path.write_bytes(blob)
    problems = []
    for load in (nn.load_model, nn.load_checkpoint):
        try:
            out = load(path)
        except CaseTimeout:
            raise
        except Exception as exc:  # noqa: BLE001 - the point is to see every type
            why = _expect_named(exc, path)
            if why:
                problems.append(f"{load.__name__}: {why}")
        else:
            LOADED[0] += 1
            model = out if load is nn.load_model else out["model"]
            if not isinstance(model, nn.Module):
                problems.append(f"{load.__name__} returned {type(model).__name__}")
    return problems


def run_idx_case(blob, path):
    path.write_bytes(blob)
    try:
        ds.read_idx(path)
    except CaseTimeout:
        raise
    except Exception as exc:  # noqa: BLE001
        why = _expect_named(exc, path)
        return [f"read_idx: {why}"] if why else []
    LOADED[0] += 1
    return []


_ACC = re.compile(r"test accuracy ([0-9.]+) \((\d+)/(\d+)\)")


def run_resume_case(blob, path, seed):
    path.write_bytes(blob)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["train", "--resume", str(path), "--data-dir", str(seed["data"]),
                           "--no-download", "-q", "--epochs", "2"])
    except CaseTimeout:
        raise
    except BaseException as exc:  # noqa: BLE001 - main must catch everything itself
        return [f"cli.main raised {type(exc).__name__}: {exc}"]
    if rc not in (0, 1, 2):
        return [f"exit status {rc}"]
    if "Traceback" in err.getvalue():
        return ["traceback on stderr"]
    if rc == 0:
        LOADED[0] += 1
        m = _ACC.search(out.getvalue())
        if not m or not 1 <= int(m.group(3)) <= seed["n_test"] or int(m.group(2)) > int(m.group(3)):
            return [f"exit 0 with a bogus test report: {out.getvalue().strip()[-200:]}"]
    return []


def _mutate_resume(blob, rng):
    """Mostly JSON edits of the stored settings and history; sometimes generic damage."""
    if rng.random() < 0.3:
        return mutate_npz(blob, rng)
    members = _members(blob)
    names = [n for n, _ in members]
    i = names.index("__meta__.npy")
    meta = json.loads(np.lib.format.read_array(io.BytesIO(members[i][1])).tobytes())
    target = meta["checkpoint"]["extra"]
    r = rng.random()
    if r < 0.6:
        settings = target["cli"]["settings"]
        key = list(settings)[rng.integers(len(settings))]
        settings[key] = _random_value(rng) if rng.random() < 0.7 else \
            type(settings[key])(-9990) if isinstance(settings[key], (int, float)) \
            and not isinstance(settings[key], bool) else None
    elif r < 0.8:
        meta["checkpoint"]["extra"] = _mutate_json(target, rng)
    else:
        meta["checkpoint"]["epoch"] = _random_value(rng)
    members[i] = ("__meta__.npy", _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8)))
    return _pack(members)


def fuzz(cases, seed=0, kinds=KINDS, case_seconds=20.0, keep=None, log=print):
    """Run ``cases`` cases; return a summary dict."""
    warnings.simplefilter("ignore")  # duplicate zip names, Softmax before the loss: wanted here
    rng = np.random.default_rng(seed)
    work = Path(tempfile.mkdtemp(prefix="fastconv-fuzz-"))
    try:
        seeds = make_seeds(work, kinds)
        weights = np.array([WEIGHTS[k] for k in kinds])
        weights /= weights.sum()
        counts = dict.fromkeys(kinds, 0)
        failures = []
        slowest = 0.0
        signal.signal(signal.SIGALRM, _alarm)
        signal.signal(signal.SIGPROF, _alarm)
        t0 = time.perf_counter()
        for case in range(cases):
            kind = kinds[rng.choice(len(kinds), p=weights)]
            counts[kind] += 1
            path = work / f"case-{kind}.bin"
            if kind == "idx":
                blob = mutate_idx(seeds["idx"][rng.integers(len(seeds["idx"]))], rng)
            elif kind == "resume":
                blob = _mutate_resume(seeds["resume"]["ckpt"], rng)
            else:
                pool = seeds[kind]
                blob = mutate_npz(pool[rng.integers(len(pool))], rng)
            start, cpu0 = time.perf_counter(), time.process_time()
            # The limit is on CPU time (ITIMER_PROF): at nice 19 on a busy machine a
            # case can wait for the CPU far longer than it runs. A wall-clock limit
            # 20 times longer still catches a case that blocks without computing.
            signal.setitimer(signal.ITIMER_PROF, case_seconds)
            signal.setitimer(signal.ITIMER_REAL, 20 * case_seconds)
            try:
                if kind == "idx":
                    problems = run_idx_case(blob, path)
                elif kind == "resume":
                    problems = run_resume_case(blob, path, seeds["resume"])
                else:
                    problems = run_npz_case(kind, blob, path)
            except CaseTimeout:
                problems = [f"took more than {case_seconds:g} s of CPU "
                            f"({time.perf_counter() - start:.1f} s of wall time)"]
            except MemoryError:
                problems = ["MemoryError (address-space cap hit)"]
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.process_time() - cpu0)
            if problems:
                failures.append({"case": case, "kind": kind, "problems": problems})
                log(f"case {case} ({kind}): " + "; ".join(problems))
                if keep is not None:
                    Path(keep).mkdir(parents=True, exist_ok=True)
                    (Path(keep) / f"case-{case}-{kind}.bin").write_bytes(blob)
            if (case + 1) % 5000 == 0:
                log(f"{case + 1} cases, {len(failures)} failures, "
                    f"{time.perf_counter() - t0:.0f} s")
        return {"cases": cases, "seed": seed, "per_kind": counts, "failures": len(failures), "loads_that_succeeded": LOADED[0],
                "failure_details": failures[:50], "seconds": round(time.perf_counter() - t0, 1),
                "slowest_case_cpu_seconds": round(slowest, 3)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--case-seconds", type=float, default=20.0,
                   help="per-case CPU-time limit (wall-clock limit: 20 times this)")
    p.add_argument("--mem-mb", type=int, default=3072,
                   help="address-space cap (RLIMIT_AS) for this process, MiB above its start size")
    p.add_argument("--keep", default=None, help="directory for the inputs of failing cases")
    p.add_argument("--json", default=None, help="write the summary here")
    args = p.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        p.error(f"--kinds: unknown {bad}; choose from {KINDS}")
    # A memory bomb must fail loudly (MemoryError) instead of swapping the machine.
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = vm + (args.mem_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    summary = fuzz(args.cases, args.seed, kinds, args.case_seconds, args.keep,
                   log=lambda m: print(m, flush=True))
    summary["mem_cap_mb"] = cap >> 20
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if summary["failures"] == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001 - a crash of the harness itself is reported as such
        traceback.print_exc()
        sys.exit(2)
