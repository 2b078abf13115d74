"""The mixture plan: which examples make up global batch s, as a pure function of the state.

    weights = resolve_weights(cfg.mixture, {t: c["train"] for t, c in store.counts().items()})
    plan = MixturePlan.from_store(store, weights, seed=cfg.seed, global_batch_size=16)
    refs = plan.batch(0)                      # 16 ExampleRefs; the plan moves to step 1
    mine = rank_slice(refs, rank, world_size)
    state = plan.state_dict()                 # small: per-task cursors, epochs, carries

Pure Python + numpy; no Ray. Every training rank runs the same plan and takes its slice, so
global batches do not depend on the world size, and a resume with a different number of
ranks sees exactly the batches the original run would have seen.

Per task, examples are consumed in a seeded order (`TaskOrder`): each epoch permutes the
task's shards (seeded by seed, task, epoch), then shuffles rows within windows of
`shuffle_window` consecutive positions (seeded by seed, task, epoch, window) — so reads stay
local to a few row groups while the order is still mixed. A task that runs out starts its
next epoch on its own; small tasks repeat, large ones may never finish one.

Two batching modes decide how many slots each task gets:
- `random`: each slot's task is drawn from the weights (rng seeded by seed and step), so the
  shares hold in expectation;
- `stratified`: largest-remainder rounding of weight x batch with a carry per task, so the
  realised mix tracks the target exactly over time (each task's cumulative count stays within
  one example of its quota). When the batch has at least as many slots as tasks, every task
  with weight > 0 gets one slot first (the Med-PaLM M rule: every task in every batch) and
  the rest is shared by the same rounding over what each task's share still asks for.
Within a batch the slots are shuffled (seed, step), so rank slices are mixed too.

Class balancing (`mixture.class_balance = { mammo_vindr = 3.0, cxr_classify = 2.0 }`, the
paper's VinDr-Mammo minority classes x3 and CXR positives x2) changes only which of a task's
rows its slots take: the task's epoch order becomes a `BalancedOrder`, in which every row of
a balanced class appears `factor` times (round(rows x factor) draws of the class per epoch,
in passes that each visit the class's rows once) and the classes are interleaved by a seeded
permutation. Labels come from the rows' `label` column (the index into the task's fixed
options); a yes/no task balances its "yes" rows, any other task the classes holding fewer
than 1/K of its rows (K options). The epoch is still a pure function of (seed, task, epoch),
so batches, state and resume work as for any other task.
"""

from __future__ import annotations

import bisect
import logging
import math
import zlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from medmix.options import ConfigError
from medmix.tasks import get_task, task_names

log = logging.getLogger(__name__)

STATE_VERSION = 1


# -- weights -----------------------------------------------------------------------------

def resolve_weights(cfg, train_rows: dict[str, int]) -> dict[str, float]:
    """Normalised task weights from a `MixtureConfig` and the store's train rows per task.

    Returns every included task (weight 0 included, so the plan knows it exists); weights of
    the tasks with weight > 0 sum to 1. Raises ConfigError naming the `mixture.*` key.
    """
    known = set(task_names()) | set(train_rows)

    def check_known(key: str, names: Iterable[str]) -> None:
        for name in names:
            if name not in known:
                raise ConfigError(f"mixture.{key}: unknown task {name!r}; registered tasks: "
                                  f"{', '.join(sorted(known))}")
    check_known("tasks", cfg.tasks)
    check_known("exclude", cfg.exclude)
    check_known("weights", [f"{t}" for t in cfg.weights])
    for task, w in cfg.weights.items():
        if not (isinstance(w, (int, float)) and math.isfinite(w)) or w < 0:
            raise ConfigError(f"mixture.weights.{task} = {w} is not a weight >= 0")
        if task in cfg.exclude and w > 0:
            raise ConfigError(f"mixture.weights.{task} = {w} but {task} is in mixture.exclude")
        if cfg.tasks and task not in cfg.tasks and w > 0:
            raise ConfigError(f"mixture.weights.{task} = {w} but {task} is not in mixture.tasks")
    for task in cfg.tasks:
        if train_rows.get(task, 0) <= 0:
            raise ConfigError(f"mixture.tasks: task {task!r} has no train rows in the store")

    if cfg.strategy == "explicit":
        included = [t for t in (cfg.tasks or cfg.weights) if t not in cfg.exclude]
    else:
        included = [t for t in (cfg.tasks or sorted(train_rows)) if t not in cfg.exclude
                    and train_rows.get(t, 0) > 0]
        # a weight given for a task is a request to train on it (checked for rows below)
        included += [t for t, w in cfg.weights.items() if w > 0 and t not in cfg.exclude]
    included = sorted(set(included))

    if cfg.strategy == "medpalm":
        raw = {t: get_task(t).mixture_weight for t in included}
    elif cfg.strategy == "proportional":
        raw = {t: float(train_rows.get(t, 0)) ** (1.0 / cfg.temperature) for t in included}
    else:
        raw = {t: 0.0 for t in included}
    for task, w in cfg.weights.items():
        if task in raw:
            raw[task] = float(w)
    for task, w in raw.items():
        if w > 0 and train_rows.get(task, 0) <= 0:
            raise ConfigError(f"mixture.weights.{task} = {w} but task {task!r} has no train rows "
                              f"in the store (give it weight 0 or ingest its data)")
    total = sum(raw.values())
    if total <= 0:
        raise ConfigError(f"mixture: every weight is zero (strategy = {cfg.strategy}, tasks = "
                          f"{', '.join(included) or 'none with train rows'}); give some task a weight > 0")
    weights = {t: w / total for t, w in raw.items()}
    return apply_floor_cap(weights, cfg.floor, cfg.cap)


def apply_floor_cap(weights: dict[str, float], floor: float, cap: float) -> dict[str, float]:
    """Clamp every positive share into [floor, cap], keeping the free ones proportional.

    Finds the scale s with sum(clip(s * w, floor, cap)) = 1 by bisection (the sum only grows
    with s), so a task pushed to the cap hands its excess to the others in proportion.
    """
    active = {t: w for t, w in weights.items() if w > 0}
    if not active or (floor <= 0 and cap >= 1):
        return dict(weights)
    if floor * len(active) > 1 + 1e-12:
        raise ConfigError(f"mixture.floor = {floor} x {len(active)} tasks with weight > 0 is more than 1")
    if cap * len(active) < 1 - 1e-12:
        raise ConfigError(f"mixture.cap = {cap} x {len(active)} tasks with weight > 0 is less than 1")

    def shares(scale: float) -> dict[str, float]:
        return {t: min(max(scale * w, floor), cap) for t, w in active.items()}

    lo, hi = 0.0, 1.0
    while sum(shares(hi).values()) < 1.0:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(shares(mid).values()) < 1.0 else (lo, mid)
    out = shares(hi)
    total = sum(out.values())
    return {t: (out[t] / total if t in out else 0.0) for t in weights}


# -- one task's order ----------------------------------------------------------------------

@dataclass(frozen=True)
class ExampleRef:
    """Where one example of a global batch lives, and where it sits in its task's order."""

    task: str
    shard: str          # shard path relative to the store root
    row: int            # row inside the shard
    example_index: int  # the row's index in the task's manifest order (its identity in the task)
    epoch: int          # the task's epoch this draw belongs to
    position: int       # position in that epoch's order (0 .. task rows - 1)


def seeded_rng(*parts: int | str) -> np.random.Generator:
    """A generator that is a pure function of `parts` (ints and strings), on any machine."""
    ints = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return np.random.default_rng(np.random.SeedSequence(ints))


class TaskOrder:
    """The seeded order in which one task's rows are consumed; `ref(epoch, position)` is pure."""

    def __init__(self, task: str, shards: list[tuple[str, int]], seed: int, shuffle_window: int):
        self.task = task
        self.shards = [(str(p), int(n)) for p, n in shards if int(n) > 0]
        self.seed = int(seed)
        self.window = int(shuffle_window)
        self.num_rows = sum(n for _, n in self.shards)
        if self.num_rows == 0:
            raise ValueError(f"task {task}: no rows to draw from")
        starts = np.cumsum([0] + [n for _, n in self.shards])
        self._first_index = starts[:-1].tolist()  # manifest-order index of each shard's row 0
        self._epoch_cache: tuple[int, list[int], list[int]] | None = None
        self._window_cache: tuple[int, int, list[int]] | None = None

    @property
    def epoch_length(self) -> int:
        """Draws in one epoch of this order (every row once)."""
        return self.num_rows

    def _epoch_layout(self, epoch: int) -> tuple[list[int], list[int]]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            perm = seeded_rng(self.seed, "shards", self.task, epoch).permutation(len(self.shards)).tolist()
            offsets = np.cumsum([0] + [self.shards[i][1] for i in perm]).tolist()
            self._epoch_cache = (epoch, perm, offsets)
        return self._epoch_cache[1], self._epoch_cache[2]

    def _window_perm(self, epoch: int, w: int) -> list[int]:
        if self._window_cache is None or self._window_cache[:2] != (epoch, w):
            size = min(self.window, self.num_rows - w * self.window)
            perm = seeded_rng(self.seed, "rows", self.task, epoch, w).permutation(size).tolist()
            self._window_cache = (epoch, w, perm)
        return self._window_cache[2]

    def ref(self, epoch: int, position: int) -> ExampleRef:
        """The example at `position` of `epoch` (positions past the end roll into later epochs)."""
        epoch, position = epoch + position // self.num_rows, position % self.num_rows
        w, k = divmod(position, self.window)
        flat = w * self.window + self._window_perm(epoch, w)[k]
        perm, offsets = self._epoch_layout(epoch)
        j = bisect.bisect_right(offsets, flat) - 1
        shard = perm[j]
        row = flat - offsets[j]
        return ExampleRef(self.task, self.shards[shard][0], row, self._first_index[shard] + row, epoch, position)

    def spec(self) -> dict:
        """What a preprocessing worker needs to rebuild this order (to fill a skipped slot)."""
        return {"task": self.task, "shards": self.shards, "seed": self.seed, "shuffle_window": self.window}


# -- class balancing ------------------------------------------------------------------------

def balanced_labels(options: tuple[str, ...], class_rows: dict[int, int]) -> list[int]:
    """The labels a class-balance factor applies to: "yes" of a yes/no task (the positives),
    else every class present with fewer than 1/K of the task's rows (K = number of options)."""
    lowered = [o.lower() for o in options]
    if sorted(lowered) == ["no", "yes"]:
        yes = lowered.index("yes")
        return [yes] if class_rows.get(yes, 0) > 0 else []
    total = sum(class_rows.values())
    return sorted(c for c, n in class_rows.items() if 0 < n and n * len(options) < total)


def resolve_class_balance(class_balance: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """Checked `mixture.class_balance` factors of the tasks that train (weight > 0).

    A factor must be a number >= 1, for a registered task whose answer is one of fixed options
    (its rows' `label` indexes them); anything else is a ConfigError naming the key.
    """
    known = set(task_names()) | set(weights)
    out = {}
    for task, factor in sorted((class_balance or {}).items()):
        key = f"mixture.class_balance.{task}"
        if task not in known:
            raise ConfigError(f"mixture.class_balance: unknown task {task!r}; registered tasks: "
                              f"{', '.join(sorted(known))}")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
                or factor < 1:
            raise ConfigError(f"{key} = {factor!r} is not a factor >= 1 (how many times more often a "
                              f"minority-class or positive example is drawn; 1 = no balancing)")
        spec = get_task(task)
        if not (spec.has_options and spec.options):
            raise ConfigError(f"{key} = {factor}: task {task!r} ({spec.kind}) has no class labels -- "
                              f"its answers are not one of fixed options, so there are no classes to "
                              f"balance; remove the key (tasks with classes: "
                              f"{', '.join(sorted(t for t in task_names() if get_task(t).options))})")
        if weights.get(task, 0.0) > 0:
            out[task] = float(factor)
    return out


def read_task_labels(store, task: str, shards, key: str) -> np.ndarray:
    """The `label` column of a task's shards, in manifest order, checked against its options."""
    options = get_task(task).options
    parts = []
    for s in shards:
        if s.rows <= 0:
            continue
        col = store.read_shard(s, columns=["label"]).column("label")
        if col.null_count:
            first = col.to_pylist().index(None)
            raise ConfigError(f"{key}: shard {s.path} has {col.null_count} row(s) without a label "
                              f"(first: row {first}); class balancing needs every train row's label -- "
                              f"re-ingest the task with labels or remove the key")
        labels = col.to_numpy().astype(np.int64)
        bad = np.flatnonzero((labels < 0) | (labels >= len(options)))
        if bad.size:
            raise ConfigError(f"{key}: shard {s.path} row {int(bad[0])} has label {int(labels[bad[0]])}, "
                              f"not an index into the task's {len(options)} options; re-ingest the task")
        if len(labels) != s.rows:
            raise ConfigError(f"{key}: shard {s.path} holds {len(labels)} rows, the manifest says "
                              f"{s.rows} (run `medmix data verify`)")
        parts.append(labels)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class BalancedOrder:
    """A task's order with some classes oversampled; `ref(epoch, position)` is pure.

    One epoch holds round(rows_c x factor_c) draws of each class c (factor 1 for the classes
    not balanced): the class's rows in seeded passes that each visit every row once, cut to
    that length. The epoch's class sequence is a seeded permutation of those draws, so classes
    are mixed evenly through the epoch. Rows are indexed in manifest order, as in `TaskOrder`.
    """

    def __init__(self, task: str, shards: list[tuple[str, int]], seed: int, shuffle_window: int,
                 labels, factors: dict[int, float]):
        self.base = TaskOrder(task, shards, seed, shuffle_window)
        self.task, self.shards, self.seed, self.window = task, self.base.shards, self.base.seed, self.base.window
        self.num_rows = self.base.num_rows
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != self.num_rows:
            raise ValueError(f"task {task}: {len(self.labels)} labels for {self.num_rows} rows")
        self.classes = sorted(int(c) for c in np.unique(self.labels))
        self.members = {c: np.flatnonzero(self.labels == c) for c in self.classes}
        self.factors = {c: float(factors.get(c, 1.0)) for c in self.classes}
        self.slots = {c: max(1, int(round(len(self.members[c]) * self.factors[c]))) for c in self.classes}
        self._length = sum(self.slots.values())
        self._first_index = self.base._first_index
        self._cache: tuple[int, np.ndarray] | None = None

    @property
    def epoch_length(self) -> int:
        return self._length

    def _epoch(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            seq = np.repeat(np.arange(len(self.classes)), [self.slots[c] for c in self.classes])
            seq = seq[seeded_rng(self.seed, "classes", self.task, epoch).permutation(len(seq))]
            flat = np.empty(len(seq), dtype=np.int64)
            for k, c in enumerate(self.classes):
                members, need = self.members[c], self.slots[c]
                passes = [seeded_rng(self.seed, "class-rows", self.task, epoch, c, j).permutation(len(members))
                          for j in range(-(-need // len(members)))]
                flat[seq == k] = members[np.concatenate(passes)[:need]]
            self._cache = (epoch, flat)
        return self._cache[1]

    def ref(self, epoch: int, position: int) -> ExampleRef:
        epoch, position = epoch + position // self._length, position % self._length
        flat = int(self._epoch(epoch)[position])
        j = bisect.bisect_right(self._first_index, flat) - 1
        row = flat - self._first_index[j]
        return ExampleRef(self.task, self.shards[j][0], row, flat, epoch, position)

    def label(self, example_index: int) -> int:
        return int(self.labels[example_index])

    def spec(self) -> dict:
        """The unbalanced order's spec: skip mode replaces an unreadable row with the row at
        the next positions of that order (deterministic; the class may differ)."""
        return self.base.spec()


# -- slot allocation -----------------------------------------------------------------------

def largest_remainder(quotas: dict[str, float], carry: dict[str, float], total: int) -> dict[str, int]:
    """Integer counts summing to `total` for these quotas; updates `carry` in place.

    Each task's due = carry + quota; it gets floor(due), and the slots left go to the largest
    fractional parts (ties: task name). What a task got less or more than its due is carried.
    """
    due = {t: carry.get(t, 0.0) + q for t, q in quotas.items()}
    counts = {t: max(0, math.floor(d)) for t, d in due.items()}
    left = total - sum(counts.values())
    order = sorted(due, key=lambda t: (-(due[t] - counts[t]), t))
    i = 0
    while left > 0:  # hand the rest out by remainder; loops only when carries overshoot
        counts[order[i % len(order)]] += 1
        left -= 1
        i += 1
    while left < 0:  # more floors than slots (possible only after large carries): take back
        t = max((t for t in counts if counts[t] > 0), key=lambda t: (counts[t] - due[t], t))
        counts[t] -= 1
        left += 1
    for t in due:
        carry[t] = due[t] - counts[t]
    return counts


def stratified_counts(weights: dict[str, float], carry: dict[str, float], batch: int) -> dict[str, int]:
    """Slots per task for one stratified batch (the paper's rule when batch >= tasks)."""
    active = sorted(t for t, w in weights.items() if w > 0)
    if batch >= len(active):
        # one slot each first; the rest by what each share still asks for beyond that slot
        extra = {t: max(weights[t] * batch - 1.0, 0.0) for t in active}
        mass = sum(extra.values())
        rest = batch - len(active)
        quotas = {t: (extra[t] * rest / mass if mass > 0 else 0.0) for t in active}
        counts = largest_remainder(quotas, carry, rest)
        return {t: counts[t] + 1 for t in active}
    return largest_remainder({t: weights[t] * batch for t in active}, carry, batch)


def stratified_shares(weights: dict[str, float], batch: int) -> dict[str, float]:
    """The long-run share of each task's slots under `stratified_counts` (carry makes it exact
    on average): with batch >= tasks every task holds one slot a batch and the rest follows
    the weights beyond that slot, which moves shares away from the weights at small batches."""
    active = sorted(t for t, w in weights.items() if w > 0)
    total = sum(weights[t] for t in active)
    if not active or total <= 0:
        return {}
    w = {t: weights[t] / total for t in active}
    if batch < len(active):
        return w
    extra = {t: max(w[t] * batch - 1.0, 0.0) for t in active}
    mass = sum(extra.values())
    rest = batch - len(active)
    return {t: (1.0 + (extra[t] * rest / mass if mass > 0 else rest / len(active))) / batch
            for t in active}


def share_shifts(weights: dict[str, float], batch: int, factor: float = 2.0) -> dict[str, tuple[float, float]]:
    """Tasks whose stratified share differs from their weight by more than `factor` either way:
    task -> (weight, realised share)."""
    total = sum(v for v in weights.values() if v > 0)
    shares = stratified_shares(weights, batch)
    out = {}
    for t, share in shares.items():
        w = weights[t] / total
        if share > w * factor or share * factor < w:
            out[t] = (w, share)
    return out


# -- the plan ------------------------------------------------------------------------------

class MixturePlan:
    """Global batches of ExampleRefs: step s is a pure function of (seed, weights, s, state).

    `class_balance` (task -> factor, see `resolve_class_balance`) needs `task_labels`: each
    balanced task's row labels in manifest order (`from_store` reads them).
    """

    def __init__(self, weights: dict[str, float], task_rows: dict[str, list[tuple[str, int]]], seed: int,
                 global_batch_size: int, mode: str = "stratified", shuffle_window: int = 1024,
                 class_balance: dict[str, float] | None = None, task_labels: dict | None = None):
        if mode not in ("random", "stratified"):
            raise ConfigError(f"mixture.mode = {mode!r} is not one of random, stratified")
        if global_batch_size < 1:
            raise ConfigError(f"mixture.global_batch_size = {global_batch_size} must be >= 1")
        self.weights = {t: float(w) for t, w in sorted(weights.items())}
        total = sum(w for w in self.weights.values() if w > 0)
        if total <= 0:
            raise ConfigError("mixture: every weight is zero; give some task a weight > 0")
        for t, w in self.weights.items():
            if w < 0:
                raise ConfigError(f"mixture.weights.{t} = {w} is negative")
            if w > 0 and sum(n for _, n in task_rows.get(t, [])) <= 0:
                raise ConfigError(f"mixture.weights.{t} = {w} but task {t!r} has no train rows")
        self.weights = {t: w / total for t, w in self.weights.items()}
        self.active = [t for t, w in self.weights.items() if w > 0]
        self.task_names = list(self.weights)  # the index space of `task_ids` in batches
        self.seed = int(seed)
        self.global_batch_size = int(global_batch_size)
        self.mode = mode
        self.shuffle_window = int(shuffle_window)
        self.class_balance = resolve_class_balance(class_balance or {}, self.weights)
        self.orders: dict[str, TaskOrder | BalancedOrder] = {}
        for t in self.active:
            if t in self.class_balance:
                if task_labels is None or t not in task_labels:
                    raise ConfigError(f"mixture.class_balance.{t}: no labels of task {t!r} were given "
                                      f"to the plan (build it with MixturePlan.from_store)")
                labels = np.asarray(task_labels[t], dtype=np.int64)
                counts = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
                boosted = balanced_labels(get_task(t).options, counts)
                self.orders[t] = BalancedOrder(t, task_rows[t], self.seed, self.shuffle_window, labels,
                                               {c: self.class_balance[t] for c in boosted})
            else:
                self.orders[t] = TaskOrder(t, task_rows[t], self.seed, self.shuffle_window)
        self.step = 0
        self.cursors = {t: 0 for t in self.active}   # next position in the task's current epoch
        self.epochs = {t: 0 for t in self.active}
        self.carry = {t: 0.0 for t in self.active}
        self.counts = {t: 0 for t in self.active}    # examples drawn so far (realised mix)
        self.class_counts = {t: {c: 0 for c in o.classes} for t, o in self.orders.items()
                             if isinstance(o, BalancedOrder)}   # draws per class of balanced tasks
        for t, o in self.orders.items():
            if isinstance(o, BalancedOrder):
                log.info("mixture: %s classes balanced x%g (%s): per-epoch shares %s", t,
                         self.class_balance[t], ", ".join(self._class_name(t, c) for c, f in o.factors.items()
                                                          if f > 1) or "none in minority",
                         ", ".join(f"{self._class_name(t, c)} {o.slots[c] / o.epoch_length:.1%} "
                                   f"(rows {len(o.members[c]) / o.num_rows:.1%})" for c in o.classes))
        if mode == "stratified":
            moved = share_shifts({t: self.weights[t] for t in self.active}, self.global_batch_size)
            if moved:
                log.warning("mixture: stratified batches of %d move %s from its weight (realised "
                            "share vs weight: %s); every task holds one slot a batch -- use a "
                            "larger global_batch_size or mode = random to follow the weights",
                            self.global_batch_size, ", ".join(sorted(moved)),
                            ", ".join(f"{t} {s:.1%} vs {w:.1%}" for t, (w, s) in sorted(moved.items())))

    @classmethod
    def from_store(cls, store, weights: dict[str, float], seed: int, global_batch_size: int,
                   mode: str = "stratified", shuffle_window: int = 1024, split: str = "train",
                   class_balance: dict[str, float] | None = None) -> "MixturePlan":
        shards = {t: store.shards(task=t, split=split) for t in weights}
        task_rows = {t: [(s.path, s.rows) for s in shards[t]] for t in weights}
        balance = resolve_class_balance(class_balance or {}, weights)
        labels = {t: read_task_labels(store, t, shards[t], f"mixture.class_balance.{t}") for t in balance}
        return cls(weights, task_rows, seed, global_batch_size, mode, shuffle_window, balance, labels)

    @classmethod
    def from_config(cls, store, cfg, seed: int, split: str = "train") -> "MixturePlan":
        """Weights resolved from a `MixtureConfig` against the store's train rows."""
        rows = {t: c.get("train", 0) for t, c in store.counts().items()}
        return cls.from_store(store, resolve_weights(cfg, rows), seed, cfg.global_batch_size,
                              cfg.mode, cfg.shuffle_window, split, getattr(cfg, "class_balance", None))

    # -- drawing ---------------------------------------------------------------------------
    def _slot_tasks(self, step: int) -> list[str]:
        b = self.global_batch_size
        if self.mode == "random":
            rng = seeded_rng(self.seed, "mix", step)
            p = np.array([self.weights[t] for t in self.active])
            return [self.active[i] for i in rng.choice(len(self.active), size=b, p=p / p.sum())]
        counts = stratified_counts({t: self.weights[t] for t in self.active}, self.carry, b)
        slots = [t for t in self.active for _ in range(counts[t])]
        return [slots[i] for i in seeded_rng(self.seed, "slots", step).permutation(b)]

    def _next(self, task: str) -> ExampleRef:
        order = self.orders[task]
        ref = order.ref(self.epochs[task], self.cursors[task])
        self.cursors[task] += 1
        if self.cursors[task] == order.epoch_length:
            self.cursors[task] = 0
            self.epochs[task] += 1
        self.counts[task] += 1
        if task in self.class_counts:
            self.class_counts[task][order.label(ref.example_index)] += 1
        return ref

    def batch(self, step: int | None = None) -> list[ExampleRef]:
        """The global batch at `step` (must be the plan's next step); advances the state."""
        if step is not None and step != self.step:
            raise ValueError(f"plan is at step {self.step}, asked for step {step}; batches are "
                             f"drawn in order (load_state_dict a saved state to jump)")
        refs = [self._next(t) for t in self._slot_tasks(self.step)]
        self.step += 1
        return refs

    def batches(self, num_steps: int) -> list[list[ExampleRef]]:
        return [self.batch() for _ in range(num_steps)]

    # -- state -----------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """What must match for a saved state to mean the same thing in this plan."""
        return {"seed": self.seed, "mode": self.mode, "global_batch_size": self.global_batch_size,
                "shuffle_window": self.shuffle_window,
                "weights": {t: round(w, 12) for t, w in self.weights.items() if w > 0},
                "rows": {t: o.num_rows for t, o in self.orders.items()},
                **({"class_balance": {t: {str(c): o.slots[c] for c in o.classes}
                                      for t, o in self.orders.items() if isinstance(o, BalancedOrder)}}
                   if self.class_counts else {})}

    def state_dict(self) -> dict:
        """Plain JSON-able state at the next step: cursors, epochs, carries, counts."""
        return {"version": STATE_VERSION, "step": self.step, "cursors": dict(self.cursors),
                "epochs": dict(self.epochs), "carry": dict(self.carry), "counts": dict(self.counts),
                **({"class_counts": {t: {str(c): n for c, n in cc.items()} for t, cc in self.class_counts.items()}}
                   if self.class_counts else {}),
                "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Continue from a saved state. `strict` refuses a state from a different plan."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"mixture state version {state.get('version')} is not {STATE_VERSION}")
        if strict and state.get("fingerprint") != self.fingerprint():
            ours, theirs = self.fingerprint(), state.get("fingerprint") or {}
            diff = sorted(k for k in ours if ours.get(k) != theirs.get(k))
            raise ValueError(f"saved mixture state was made by a different plan (differs in: "
                             f"{', '.join(diff)}); resume with the same mixture config and store, "
                             f"or load with strict=False to continue with fresh cursors for changed tasks")
        self.step = int(state["step"])
        for t in self.active:
            n = self.orders[t].epoch_length
            self.cursors[t] = int(state["cursors"].get(t, 0)) % n
            self.epochs[t] = int(state["epochs"].get(t, 0))
            self.carry[t] = float(state["carry"].get(t, 0.0))
            self.counts[t] = int(state["counts"].get(t, 0))
        saved = state.get("class_counts") or {}
        for t, cc in self.class_counts.items():
            for c in cc:
                cc[c] = int((saved.get(t) or {}).get(str(c), 0))

    # -- observability ---------------------------------------------------------------------
    def stats(self, state: dict | None = None) -> dict:
        """Realised counts/fractions vs target, epochs per task and repeats (draws past one pass).

        Args:
            state: a `state_dict()` to describe instead of the live state (a stream reports the
                state of the last batch it handed out, not of the steps it prepared ahead).
        """
        state = state or self.state_dict()
        counts = {t: int(state["counts"].get(t, 0)) for t in self.active}
        drawn = sum(counts.values())
        out = {"step": int(state["step"]), "examples": drawn, "tasks": {}}
        for t in self.active:
            n = self.orders[t].num_rows
            out["tasks"][t] = {
                "target": self.weights[t], "count": counts[t],
                "fraction": counts[t] / drawn if drawn else 0.0,
                "rows": n, "epoch": int(state["epochs"].get(t, 0)),
                "epochs_done": counts[t] / self.orders[t].epoch_length,
                "repeats": max(0, counts[t] - n)}
            order = self.orders[t]
            if isinstance(order, BalancedOrder):  # realised class shares vs the balanced target
                drawn_c = {int(c): int(v) for c, v in ((state.get("class_counts") or {}).get(t) or {}).items()}
                out["tasks"][t]["classes"] = {
                    self._class_name(t, c): {
                        "label": c, "factor": order.factors[c], "rows": len(order.members[c]),
                        "row_share": len(order.members[c]) / n,
                        "target": order.slots[c] / order.epoch_length, "count": drawn_c.get(c, 0),
                        "fraction": drawn_c.get(c, 0) / counts[t] if counts[t] else 0.0}
                    for c in order.classes}
        return out

    @staticmethod
    def _class_name(task: str, label: int) -> str:
        options = get_task(task).options
        return options[label] if 0 <= label < len(options) else str(label)


def rank_slice(batch: list, rank: int, world_size: int) -> list:
    """Rank `rank`'s share of a global batch: the contiguous slice [rank*k, (rank+1)*k).

    Contiguous (not strided) so that concatenating the ranks' slices in rank order gives the
    global batch back; slots are already shuffled within the batch, so each slice is mixed.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size = {world_size})")
    if len(batch) % world_size:
        raise ConfigError(f"mixture.global_batch_size = {len(batch)} is not divisible by "
                          f"{world_size} ranks; make it a multiple of train.num_workers")
    k = len(batch) // world_size
    return batch[rank * k:(rank + 1) * k]
