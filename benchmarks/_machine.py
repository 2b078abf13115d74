"""What every benchmark shares: the machine line, appending a section to RESULTS.md, and the
bundled suite a benchmark reads when it is given no store."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """Cores and CPU model, RAM, GPU (if torch sees one) and the load average right now."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # noqa: BLE001 - torch missing or broken: say so, don't fail the benchmark
        gpu = "no GPU"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB RAM, {gpu}; load avg {load}"


RESULTS = Path(__file__).with_name("RESULTS.md")


def record(text: str) -> None:
    """Append one benchmark's section to benchmarks/RESULTS.md (newest last)."""
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in `benchmarks/`; newest last. "
                           "Each section: date, machine, command, numbers.\n")
    with open(RESULTS, "a") as f:
        f.write("\n" + text.strip("\n") + "\n")
    print(f"appended to {RESULTS}")


def build_suite(root: Path) -> None:
    """What `medmix synth` builds (the bundled suite), plus its tokenizer."""
    from medmix.config import load_config
    from medmix.data.synth.suite import build_bundled
    from medmix.data.tokenizer import ensure_tokenizer
    cfg = load_config("debug", [f'data.root="{root}"'])
    build_bundled(cfg, progress=False)
    ensure_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)


def bundled_store(given: str, work: Path) -> Path:
    """The shard store a benchmark reads: `given` (--data), else the bundled suite under `work`,
    built there on first use."""
    data = Path(given) if given else work / "data"
    if not (data / "manifest.json").is_file():
        print(f"building the bundled suite in {data} ...", flush=True)
        build_suite(data)
    return data
