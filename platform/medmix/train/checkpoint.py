"""Checkpoints: DCP shards for model + optimizer tensors, `medmix.json` for everything else.

A checkpoint directory holds
  - `__<rank>_0.distcp` + `.metadata`: torch.distributed.checkpoint (DCP) shards of the model
    and optimizer *tensors*; each rank writes only its own shards, so saving scales with the
    cluster and loading reshards onto a different number of workers (2 -> 1 works);
  - `medmix.json`: step, resolved config, data-plan state, optimizer hyper-parameters,
    scheduler step, RNG states, shard/tokenizer digests, MLflow run id, metrics, parent;
  - `COMMITTED`: written last, once every rank's part is stored (a checkpoint without it is
    torn and never resumed, exported or served).
Non-tensor state lives in JSON on purpose: nothing medmix writes needs unpickling to resume
(DCP's own `.metadata` index is the one pickle, written and read by torch itself).

    save_checkpoint(path, model, optimizer, meta)      # every rank, collectively
    meta = load_checkpoint(path, model, optimizer)     # every rank, collectively
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medmix.storage import location

META_FILE = "medmix.json"
COMMIT_FILE = "COMMITTED"
"""Written into a checkpoint after every rank has uploaded its part (see `is_committed`)."""


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's medmix.json (local folder or `s3://` URI)."""
    p = location(path).join(META_FILE)
    if not p.is_file():
        raise FileNotFoundError(f"{path} is not a medmix checkpoint: {META_FILE} is missing")
    return json.loads(p.read_text())


def find_latest_checkpoint(path: str | os.PathLike) -> Path | str | None:
    """`path` itself if it is a whole checkpoint, else its latest whole `step-NNNNNN` checkpoint,
    else None. A local path gives a Path; an `s3://` URI gives the checkpoint's URI. A torn
    checkpoint (see `is_committed`) is never picked."""
    loc = location(path)
    if loc.join(META_FILE).is_file():
        return (loc.local_path() if loc.is_local else loc.uri) if is_committed(loc) else None
    if loc.is_local:
        steps = [p.parent for p in sorted(Path(loc.path).glob(f"step-*/{META_FILE}"))]
        return next((s for s in reversed(steps) if is_committed(s)), None)
    metas = [f for f in loc.files(recursive=True) if f.name == META_FILE
             and f.parent.name.startswith("step-") and f.parent.parent.path == loc.path]
    remote = sorted((f.parent for f in metas), key=lambda d: d.name)
    return next((s.uri for s in reversed(remote) if is_committed(s)), None)


def latest_checkpoint(path: str | os.PathLike) -> Path | str:
    """A whole checkpoint directory, or a run directory's latest; FileNotFoundError otherwise."""
    found = find_latest_checkpoint(path)
    if found is None:
        if location(path).join(META_FILE).is_file():
            raise FileNotFoundError(f"{path} is a torn checkpoint: its {COMMIT_FILE} is missing (a worker "
                                    f"died while the checkpoint was being written); use an earlier step")
        raise FileNotFoundError(f"{path} holds no medmix checkpoint (no step-*/{META_FILE})")
    return found


def is_committed(path: str | os.PathLike) -> bool:
    """Whether the checkpoint at `path` is whole. Every rank uploads its own shards, and rank 0
    its medmix.json, independently: a worker killed mid-upload leaves a folder that has a
    medmix.json but not every shard. A checkpoint whose medmix.json says `commit` is whole only
    once its COMMIT_FILE exists, written after every rank has finished (callbacks.CheckpointCommit);
    older checkpoints, without the key, are taken as they are."""
    loc = location(path)
    try:
        meta = json.loads(loc.join(META_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return not meta.get("commit") or loc.join(COMMIT_FILE).is_file()


def write_meta(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    p = Path(path) / META_FILE
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True, default=_jsonable))
    os.replace(tmp, p)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in {META_FILE}")


def rng_state() -> dict[str, str]:
    """Python, numpy and torch RNG states as base64 text (JSON, no pickle)."""
    np_state: Any = np.random.get_state()  # the legacy tuple: (name, keys, pos, has_gauss, gauss)
    return {
        "python": base64.b64encode(json.dumps(random.getstate()).encode()).decode(),
        "numpy": base64.b64encode(json.dumps([np_state[0], np_state[1].tolist(), *np_state[2:]]).encode()).decode(),
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }


def set_rng_state(state: dict[str, str]) -> None:
    py = json.loads(base64.b64decode(state["python"]))
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = json.loads(base64.b64decode(state["numpy"]))
    np.random.set_state((npy[0], np.array(npy[1], dtype=np.uint32), *npy[2:]))
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))


def _split_optimizer(osd: dict) -> tuple[dict, list]:
    """Optimizer state -> (tensors for DCP, JSON-able param-group hyper-parameters)."""
    groups = []
    for g in osd.get("param_groups", []):
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return osd.get("state", {}), groups


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    meta: dict[str, Any], *, rank: int) -> None:
    """Collective: every rank writes its DCP shards into `path`; rank 0 writes medmix.json."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    Path(path).mkdir(parents=True, exist_ok=True)
    msd, osd = get_state_dict(model, optimizer)
    opt_tensors, groups = _split_optimizer(osd)
    with _single_process() as no_dist:
        dcp.save({"model": msd, "optim": opt_tensors}, checkpoint_id=str(path), no_dist=no_dist)
    if rank == 0:
        write_meta(path, {**meta, "param_groups": groups})


def dcp_load(state: dict, path: str | os.PathLike) -> None:
    """`dcp.load` in place (one process reads every shard without a process group)."""
    import torch.distributed.checkpoint as dcp
    with _single_process() as no_dist:
        dcp.load(state, checkpoint_id=str(path), no_dist=no_dist)


@contextlib.contextmanager
def _single_process():
    """Yields whether there is no process group; then one process reads or writes every DCP
    shard, which is what medmix means (export, serving, a Trainer without Ray), so DCP's
    warning saying so is dropped."""
    no_dist = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    with warnings.catch_warnings():
        if no_dist:
            warnings.filterwarnings("ignore", message=r"torch\.distributed is .*single process")
        yield no_dist


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Collective: load model (+ optimizer) tensors resharded to this world size; return meta."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict,
                                                         set_model_state_dict, set_state_dict)

    meta = read_meta(path)
    if optimizer is None:
        msd = get_state_dict(model, [])[0]
        dcp_load({"model": msd}, path)
        set_model_state_dict(model, msd, options=StateDictOptions(strict=True))
        return meta
    msd, osd = get_state_dict(model, optimizer)
    opt_tensors, _ = _split_optimizer(osd)
    state = {"model": msd, "optim": opt_tensors}
    dcp_load(state, path)
    groups = meta["param_groups"]
    osd = {"state": state["optim"], "param_groups": [
        {k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]}
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=osd)
    return meta
