"""The data sections of `MedmixConfig`: shard store, tokenizer, task mixture, per-rank stream.

Plain dataclasses with no heavy imports, so the root config can declare them statically; what
each one builds lives beside it: `store.py` (ShardStore), `tokenizer.py` (MedmixTokenizer),
`mixture.py` (the plan), `stream.py` (RankStream, which imports Ray).
"""

from __future__ import annotations

from dataclasses import dataclass

from medmix.options import ConfigError, map_option, option


@dataclass
class StoreConfig:
    """Where the shard store lives and how its part files are cut."""

    root: str = option("medmix-data", "shard store directory (local path)")
    max_rows_per_shard: int = option(2048, "rows per Parquet part file before a new one starts", ge=1)
    max_bytes_per_shard: int = option(64 * 2**20, "approximate bytes per part file", ge=1024)
    row_group_rows: int = option(128, "rows per Parquet row group (the unit random reads decode)", ge=1)
    image_size: int = option(224, "side of the square images models see, in pixels", ge=16, le=4096)


@dataclass
class TokenizerConfig:
    """The text tokenizer: trained BPE on the store's text, or the decoder's own."""

    path: str = option("", "tokenizer to use: a tokenizer.json, a model directory or a .gguf (pkg:<package>/<file> "
                       "allowed); '' = the decoder's own when model.decoder_path is set, else "
                       "<store root>/tokenizer/tokenizer.json (trained on the store)")
    vocab_size: int = option(4096, "BPE vocabulary size when training on the store's text", ge=64, le=1_000_000)
    min_frequency: int = option(2, "minimum pair frequency for a BPE merge", ge=1)
    chat_template: str = option("auto", "auto: when the decoder's tokenizer has a chat template, prompts are "
                                "rendered through it (system / user / assistant turns) in training, evaluation "
                                "and serving alike; none: medmix's plain Instructions/Q:/A: prompts",
                                choices=("auto", "none"))


@dataclass
class MixtureConfig:
    """Which tasks train together, in what shares, and how global batches are drawn."""

    strategy: str = option("medpalm", "where weights come from: medpalm (the paper's shares), "
                           "proportional (to train rows, with temperature/floor/cap) or explicit (`weights`)",
                           choices=("medpalm", "proportional", "explicit"))
    weights: dict[str, float] = map_option("task -> weight; with strategy=explicit the whole mixture, "
                                            "otherwise per-task replacements of the strategy's weights")
    temperature: float = option(1.0, "proportional: weight ∝ rows^(1/temperature); >1 flattens toward uniform", gt=0)
    floor: float = option(0.0, "minimum share of every included task after normalising", ge=0, lt=1)
    cap: float = option(1.0, "maximum share of any task after normalising", gt=0, le=1)
    tasks: list[str] = option(default_factory=list, help="tasks to include; empty = every task with train rows")
    exclude: list[str] = option(default_factory=list, help="tasks to leave out (ablations)")
    mode: str = option("stratified", "random: shares hold in expectation; stratified: every global batch holds "
                       "each task's share (largest remainder with carry)", choices=("random", "stratified"))
    global_batch_size: int = option(16, "examples per optimizer step across all ranks", ge=1)
    shuffle_window: int = option(1024, "rows shuffled together inside a task's epoch order", ge=1)
    class_balance: dict[str, float] = map_option(
        "task -> factor >= 1: rows of the task's minority classes (fewer than 1/K of its rows; for a "
        "yes/no task its positives) are drawn that many times more often within the task, "
        "e.g. { mammo_vindr = 3.0, cxr_classify = 2.0 } (the paper's)")

    def validate(self) -> None:
        for task, w in self.weights.items():
            if w < 0:
                raise ConfigError(f"weights.{task} = {w} is negative; weights must be >= 0")
        if self.strategy == "explicit" and not self.weights:
            raise ConfigError("strategy = explicit needs [mixture.weights] with at least one task")
        for task, f in self.class_balance.items():
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not f >= 1:
                raise ConfigError(f"mixture.class_balance.{task} = {f!r} is not a factor >= 1 (1 = no balancing)")
        if self.floor > self.cap:
            raise ConfigError(f"floor = {self.floor} is above cap = {self.cap}")



@dataclass
class StreamConfig:
    """How each training rank turns its slice of the mixture plan into tensors."""

    max_seq_len: int = option(512, "tokens per example after image expansion; longer prompts lose their exemplar first", ge=16)
    prefetch_batches: int = option(4, "batches each rank prepares ahead of the training loop", ge=0)
    engine: str = option("actors", "who builds the batches on Ray: actors = a pool of `concurrency` preprocessing "
                         "actors living as long as the stream; dataset = Ray Data, one Dataset per block",
                         choices=("actors", "dataset"))
    steps_per_block: int = option(16, "plan steps drawn at once (the dataset engine: one Dataset per block)", ge=1)
    num_cpus_per_task: float = option(0.25, "logical CPUs one preprocessing actor (or task) asks Ray for", gt=0)
    concurrency: int = option(2, "preprocessing actors (or tasks at once) per rank", ge=1)
    on_error: str = option("raise", "a corrupt row: `raise` (fail naming shard and row) or `skip` (count, report, replace)",
                           choices=("raise", "skip"))
    exemplar: bool = option(True, "render the one-shot exemplar in every prompt (Med-PaLM M framing)")
    augment: bool = option(False, "training images get the random flips/crops their task allows (TaskSpec.augment); seeded per example and epoch, never applied to validation")

    def validate(self) -> None:
        if self.prefetch_batches > 64:
            raise ConfigError(f"prefetch_batches = {self.prefetch_batches} holds too many batches in memory (max 64)")

