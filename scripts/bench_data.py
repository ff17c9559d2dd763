"""Data at scale: preparing a 100 MB and a 500 MB corpus, a cache hit, and training on it.

The corpora repeat tiny-shakespeare (char level) and WikiText-2's train.txt (word
level) up to each size. Every measurement runs in a fresh process, whose peak RSS
the parent reads from ``os.wait4``: cold prepare (hash, vocabulary, encoding, cache
write: ``LMDataModule.setup`` on an empty cache), warm start (the same on the
cache it left), and, at the largest size, ``rnnlab-train`` for a few batches on an
empty cache of its own, so that its peak covers preparing and training alike.
MB are 10^6 bytes of corpus text.

    PYTHONPATH=src python scripts/bench_data.py --sizes 100,500 --out bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {
    "char": SHARED / "tinyshakespeare" / "input.txt",
    "word": SHARED / "wikitext-2" / "train.txt",
}
#: the issue's goals: cold prepare throughput per level, and peak RSS of any process
GOAL_MB_S = {"char": 50.0, "word": 10.0}
GOAL_RSS_MB = 1500.0
#: the training run's sizes: the word level takes those of configs/data/wikitext2.yaml
TRAIN_OVERRIDES = {
    "char": [],
    "word": ["data.batch_size=20", "data.seq_len=35", "data.eval_batch_size=10"],
}


def make_corpus(source: Path, target: Path, megabytes: int) -> int:
    """Write ``source`` repeated to about ``megabytes`` MB (whole lines); returns the bytes."""
    data, size = source.read_bytes(), megabytes * 10**6
    written = 0
    with open(target, "wb") as file:
        while part := data[: size - written]:
            part = part[: part.rfind(b"\n") + 1]
            if not part:
                break
            file.write(part)
            written += len(part)
    return written


def run_measured(command: list[str], log: Path) -> tuple[float, float, int]:
    """Run ``command`` (output to ``log``); its wall seconds, peak RSS in MB and exit status."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
    return time.perf_counter() - start, usage.ru_maxrss * 1024 / 1e6, process.returncode


def prepare_in_child(path: Path, level: str, cache_dir: Path, log: Path) -> dict:
    """One ``setup`` in a fresh process: its seconds, peak RSS and what it found."""
    report = log.with_suffix(".json")
    command = [sys.executable, __file__, "--prepare", str(path), "--level", level]
    command += ["--cache-dir", str(cache_dir), "--out", str(report)]
    _, rss, status = run_measured(command, log)
    if status != 0:
        raise SystemExit(f"prepare failed ({status}); see {log}")
    return {**json.loads(report.read_text()), "peak_rss_mb": rss}


def prepare(path: str, level: str, cache_dir: str, out: str) -> None:
    """The child's side: time ``setup`` alone, after the imports."""
    from rnnlab.data.datamodule import LMDataModule

    import_rss = rss_now_mb()
    start = time.perf_counter()
    datamodule = LMDataModule(path=path, level=level, cache_dir=cache_dir)
    datamodule.setup("fit")
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "tokens": sum(datamodule.num_tokens(s) for s in ("train", "val", "test")),
        "vocab": len(datamodule.vocab),
        "dtype": str(datamodule.vocab.dtype),
        "import_rss_mb": import_rss,
    }
    Path(out).write_text(json.dumps(result))


def rss_now_mb() -> float:
    status = Path("/proc/self/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024 / 1e6


def train_in_child(path: Path, level: str, work: Path, batches: int) -> dict:
    """``rnnlab-train`` for ``batches`` batches on an empty cache: seconds and peak RSS."""
    run_dir = work / f"train-{level}"
    command = [
        sys.executable,
        "-m",
        "rnnlab.cli.train",
        f"data.path={path}",
        f"data.level={level}",
        f"data.cache_dir={run_dir / 'cache'}",
        f"hydra.run.dir={run_dir}",
        "model.hidden_size=64",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={batches}",
        "trainer.limit_val_batches=20",
        "trainer.limit_test_batches=20",
        *TRAIN_OVERRIDES[level],
    ]
    seconds, rss, status = run_measured(command, work / f"train-{level}.log")
    if status != 0:
        raise SystemExit(f"training failed ({status}); see {work / f'train-{level}.log'}")
    return {"train_seconds": seconds, "train_peak_rss_mb": rss, "train_batches": batches}


def measure(level: str, megabytes: int, work: Path, train_batches: int | None) -> dict:
    """Cold prepare, warm start (and training) of one level at one size."""
    corpus = work / f"{level}-{megabytes}mb.txt"
    size = make_corpus(SOURCES[level], corpus, megabytes)
    cache = work / f"cache-{level}-{megabytes}"
    cold = prepare_in_child(corpus, level, cache, work / f"cold-{level}-{megabytes}.log")
    warm = prepare_in_child(corpus, level, cache, work / f"warm-{level}-{megabytes}.log")
    row = {
        "level": level,
        "corpus_mb": size / 1e6,
        "tokens": cold["tokens"],
        "vocab": cold["vocab"],
        "dtype": cold["dtype"],
        "cold_seconds": cold["seconds"],
        "cold_mb_s": size / 1e6 / cold["seconds"],
        "goal_mb_s": GOAL_MB_S[level],
        "import_rss_mb": cold["import_rss_mb"],
        "cold_peak_rss_mb": cold["peak_rss_mb"],
        "warm_seconds": warm["seconds"],
        "warm_peak_rss_mb": warm["peak_rss_mb"],
        "goal_rss_mb": GOAL_RSS_MB,
    }
    if train_batches:
        row.update(train_in_child(corpus, level, work, train_batches))
    peaks = [value for key, value in row.items() if key.endswith("peak_rss_mb")]
    row["meets_goal"] = row["cold_mb_s"] >= row["goal_mb_s"] and max(peaks) < GOAL_RSS_MB
    return row


def render(rows: list[dict]) -> Table:
    table = Table(title="data at scale: LMDataModule.setup in a fresh process (MB = 10^6 bytes)")
    columns = ["level", "MB", "tokens", "vocab", "cold s", "cold MB/s", "warm s"]
    columns += ["RSS cold", "RSS warm", "train s", "RSS train", "goal"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("level", "goal") else "right")
    for row in rows:
        trained = "train_seconds" in row
        goal = f">= {row['goal_mb_s']:.0f} MB/s, RSS < {row['goal_rss_mb']:.0f} MB: "
        table.add_row(
            row["level"],
            f"{row['corpus_mb']:.0f}",
            f"{row['tokens']:,}",
            f"{row['vocab']:,} {row['dtype']}",
            f"{row['cold_seconds']:.1f}",
            f"{row['cold_mb_s']:.1f}",
            f"{row['warm_seconds']:.2f}",
            f"{row['cold_peak_rss_mb']:.0f}",
            f"{row['warm_peak_rss_mb']:.0f}",
            f"{row['train_seconds']:.1f}" if trained else "",
            f"{row['train_peak_rss_mb']:.0f}" if trained else "",
            goal + ("ok" if row["meets_goal"] else "MISSED"),
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500", help="corpus sizes in MB, comma-separated")
    parser.add_argument("--levels", default="char,word", help="char, word or both")
    parser.add_argument("--work-dir", help="corpora, caches and runs go here (default: temp dir)")
    parser.add_argument("--train-batches", type=int, default=50, help="0: no training run")
    parser.add_argument("--out", default="bench_data.json", help="JSON file for the results")
    parser.add_argument("--prepare", help=argparse.SUPPRESS)  # the child: one setup of this path
    parser.add_argument("--level", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.level, args.cache_dir, args.out)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    console = Console(width=max(140, Console().width))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        console.print(f"{os.cpu_count()} CPUs; corpora, caches and runs in {work}")
        rows = []
        for level in args.levels.split(","):
            for size in sizes:
                train = args.train_batches if size == max(sizes) else None
                rows.append(measure(level, size, work, train))
                console.print(f"{level} {size} MB: {json.dumps(rows[-1])}")
    console.print(render(rows))
    meta = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "sources": {level: str(path) for level, path in SOURCES.items()},
    }
    with open(args.out, "w") as handle:
        json.dump({"meta": meta, "results": rows}, handle, indent=2)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
