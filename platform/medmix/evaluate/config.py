"""Configuration of `medmix evaluate`: which split, how many examples, how answers are produced."""

from __future__ import annotations

from dataclasses import dataclass

from medmix.options import option


@dataclass
class EvalConfig:
    """Batch evaluation of a checkpoint or registered model over each task's held-out rows."""

    split: str = option("test", "split to evaluate on", choices=("train", "val", "test"))
    tasks: list[str] = option(default_factory=list, help="tasks to evaluate; empty = the tasks the model was "
                              "trained on (weight > 0 in its mixture) that have rows in the split")
    max_examples_per_task: int = option(0, "evaluate at most this many examples per task (0 = all)", ge=0)
    max_new_tokens: int = option(64, "generation budget per free-text answer, in tokens", ge=1)
    batch_size: int = option(16, "examples per inference batch (per actor)", ge=1)
    bootstrap: int = option(200, "bootstrap replicates of a metric's confidence interval, where one is asked "
                            "for (the transfer report's headline metrics)", ge=50)
    blank_images: bool = option(False, "replace every image by a blank one (proves answers depend on the image)")
    report_dir: str = option("medmix-runs/eval", "folder or s3:// URI where the Markdown report and the bar chart "
                             "are written (one folder per evaluation)")
    use_ray: bool = option(True, "run inference in Ray Data actors; false = in this process")
    num_actors: int = option(0, "Ray actors holding one model each; 0 = one per GPU, else 2 on CPU", ge=0)
    cpus_per_actor: float = option(0.5, "logical CPUs each actor asks Ray for (torch threads = max(1, floor))", gt=0)
    use_gpu: str = option("auto", "auto (one GPU per actor if the cluster has GPUs), true or false",
                          choices=("auto", "true", "false"))
