"""Speed benchmark: the suite's framework overhead, and what the paper's
CIFAR-10 grid would cost on this machine.

    python -m benchmark.speed.bench [--device auto|cpu|cuda] [--arch NAME ...] [--images N]
                              [--repeats R] [--threads T] [--json PATH] [--quick] [--no-estimate]

What is measured. For each architecture, five workloads, each twice in the
same process: once through the suite's real code path (a Lightning module
fitted or tested by `benchmark.training.TrainerFactory`, with the data
module's device-resident loader) and once through a plain-PyTorch loop doing
the same work (same architecture and initialisation, batch size, number of
steps, device, precision, and the same batches on the same device):

1. attack training: `AttackModule` with a BadNets trigger on 10 % poisoned
   data vs SGD + per-step cosine schedule with the same poisoning and
   augmentation;
2. defense training: the FT defense on a clean subset for several epochs
   (the paper's small-subset, many-epoch shape) vs a plain fine-tuning loop
   with FT's optimiser settings;
3. WBA: delta updates of the white-box re-activation (forward of the frozen
   model on trigger + delta, loss, backward to delta, SGD step, projection);
4. QBRA: queries through `QueryOracle` as the Square Attack search issues
   them vs a plain no-grad forward + softmax of the same batches. This ratio
   also carries the search's own bookkeeping (window proposals, a host read
   of loss and ASR per query), which a bare forward does not do;
5. evaluation: `TrainerFactory.evaluate` of a `BackdoorStage` (C-Acc, ASR,
   RA) vs a no-grad loop computing the same three numbers.

Every timed run follows an untimed warm-up of the same path, is timed with
`time.perf_counter` (CUDA synchronised at both ends), and counts the images
and forward calls the model really saw, so both sides are checked to have
done the same work. A suite timing includes everything the real path pays
per fit: building the Lightning Trainer, moving the module, hooks, logging.

How to read the ratio: suite seconds / plain seconds for identical work.
1.00 means no overhead; 1.10 (the project's target ceiling) means the
framework adds 10 % to the raw PyTorch cost. Runs shorter than a second or
two make per-fit constants (Trainer construction, ~tens of ms) dominate, so
quick-mode ratios overstate what a full-length job pays. On a shared CPU
timings are noisy; `--repeats` keeps the fastest of several runs per side.

Then: the paper's CIFAR-10 grid (sweeps/cifar10.yaml) is planned on a
CIFAR-10-sized synthetic data module (planning only, nothing runs), and every
job's work (images through the model) is priced at the suite rates measured
for the largest architecture measured here (`estimate_grid`). The printed
footnote and the JSON list the assumptions.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import lightning
import torch
from rich.console import Console
from rich.table import Table

from benchmark.speed.loops import Bench, Side, make_sizes
from benchmark.speed.workloads import WORKLOADS
from benchmark.speed.grid_estimate import ASSUMPTIONS, GRID_FILE, estimate_grid, planned_jobs
from benchmark.cell.stages.reactivation import SEARCH_PRECISION

#: (channels, image side) each architecture is benchmarked on: the small CNN on
#: Fashion-MNIST's shape, everything else on CIFAR-10's
IMAGE_SHAPES = {"small_cnn": (1, 28)}
CIFAR_SHAPE = (3, 32)
#: training images per timed run: the small CNN does 10,000 in seconds on two
#: CPU cores; PreAct-ResNet18 on a CPU takes ~13 s per 128-image training step
#: (one core, measured), so it gets a short run there (still several minutes
#: for all five workloads); a GPU gets CIFAR-10's full 50,000
DEFAULT_IMAGES_CPU = {"small_cnn": 10_000}
DEFAULT_IMAGES_CPU_OTHER = 256
DEFAULT_IMAGES_CUDA = 50_000
QUICK_IMAGES = 512
#: timed runs per side: two, in alternating order, damp the noise of a shared
#: machine at twice the cost (about 2.5 min for the default CPU run on two idle cores)
REPEATS = 2

# ---- running the workloads -----------------------------------------------------------------------------

def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but CUDA is not available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def default_archs(device: torch.device) -> list[str]:
    return ["small_cnn", "preact_resnet18"] if device.type == "cuda" else ["small_cnn"]


def images_for(arch: str, device: torch.device, images: int | None, quick: bool) -> int:
    if images:
        return images
    if quick:
        return QUICK_IMAGES
    if device.type == "cuda":
        return DEFAULT_IMAGES_CUDA
    return DEFAULT_IMAGES_CPU.get(arch, DEFAULT_IMAGES_CPU_OTHER)


def side_record(side: Side, steps_name: str) -> dict:
    return {"seconds": side.seconds, "images": side.images, "steps": side.forward_calls, "step": steps_name,
            "images_per_s": side.images / side.seconds, "steps_per_s": side.forward_calls / side.seconds,
            **({"details": side.extra} if side.extra else {})}


def measure_arch(arch: str, device: torch.device, images: int, repeats: int, console: Console) -> dict:
    channels, side = IMAGE_SHAPES.get(arch, CIFAR_SHAPE)
    sizes = make_sizes(images, device.type == "cuda")
    bench = Bench(arch, device, sizes, channels, side)
    params = sum(p.numel() for p in bench.new_model().parameters())
    workloads = {}
    for name, build in WORKLOADS.items():
        best = build(bench).measure(repeats)
        console.print(f"  {arch:>16} {best.workload:<24} suite/plain {best.ratio:.3f}", highlight=False)
        workloads[name] = {"workload": best.workload, "ratio": best.ratio,
                           "suite": side_record(best.suite, best.step_name),
                           "plain": side_record(best.plain, best.step_name)}
    return {"arch": arch, "parameters": params, "image_shape": list(bench.dm.image_shape),
            "precision": {"training": bench.trainers.precision, "search_and_evaluation": SEARCH_PRECISION},
            "sizes": dataclasses.asdict(sizes), "workloads": workloads}


def run_benchmark(device: str = "auto", archs: list[str] | None = None, images: int | None = None,
                  quick: bool = False, repeats: int = REPEATS, estimate: bool = True, threads: int | None = None,
                  console: Console | None = None) -> dict:
    """Measure every architecture and (unless `estimate` is False) price the
    CIFAR-10 grid; returns what `--json` writes."""
    console = console or Console()
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    archs = archs or default_archs(dev)
    started = time.perf_counter()
    results = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": repeats,
               "quick": quick, "architectures": {}}
    results["lightning"] = lightning.__version__
    for arch in archs:
        results["architectures"][arch] = measure_arch(arch, dev, images_for(arch, dev, images, quick), repeats,
                                                      console)
    if estimate:
        # the largest model measured: the closest to the grid's PreAct-ResNet18
        arch = max(results["architectures"].values(), key=lambda r: r["parameters"])["arch"]
        rates = {k: w["suite"]["images_per_s"] for k, w in results["architectures"][arch]["workloads"].items()}
        plain_rates = {k: w["plain"]["images_per_s"] for k, w in results["architectures"][arch]["workloads"].items()}
        jobs, data, grid_archs = planned_jobs()
        est, plain_est = estimate_grid(jobs, rates, data), estimate_grid(jobs, plain_rates, data)
        results["grid_estimate"] = {
            "grid": str(GRID_FILE.relative_to(GRID_FILE.parent.parent)), "grid_archs": grid_archs,
            "rates_of_arch": arch, "rates_images_per_s": rates, "jobs": len(jobs),
            "hours": est.hours, "hours_at_plain_rates": plain_est.hours,
            "hours_by_group": {k: v / 3600 for k, v in sorted(est.seconds_by_group.items())},
            "jobs_by_group": dict(sorted(est.jobs_by_group.items())),
            "images_by_workload": est.images_by_workload, "not_estimated": est.not_estimated,
            "bounds": est.bounds, "assumptions": ASSUMPTIONS}
    results["seconds"] = time.perf_counter() - started
    return results


# ---- output ------------------------------------------------------------------------------------------------

def rate(value: float) -> str:
    """Whole numbers from 100 up, three significant digits below (0.0766 steps/s)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def print_results(results: dict, console: Console) -> None:
    runs = "1 timed run" if results["repeats"] == 1 else f"fastest of {results['repeats']} timed runs"
    table = Table(title=f"suite vs plain PyTorch on {results['device']} ({results['threads']} threads, "
                        f"{runs} per side)")
    for col in ("arch", "workload", "suite img/s", "plain img/s", "suite step/s", "plain step/s", "step",
                "suite/plain time", "work per side (img / steps)"):
        table.add_column(col, justify="left" if col in ("arch", "workload", "step") else "right")
    for arch, r in results["architectures"].items():
        for w in r["workloads"].values():
            s, p = w["suite"], w["plain"]
            same = s["images"] == p["images"] and s["steps"] == p["steps"]
            ratio = f"{w['ratio']:.3f}"
            table.add_row(arch, w["workload"], rate(s["images_per_s"]), rate(p["images_per_s"]),
                          rate(s["steps_per_s"]), rate(p["steps_per_s"]), s["step"],
                          ratio if w["ratio"] <= 1.10 else f"[bold red]{ratio}[/]",
                          f"{s['images']:,} / {s['steps']:,}" + ("" if same else " [red](differs)[/]"))
    console.print(table)
    console.print("suite/plain time: seconds of the suite's path over seconds of the plain loop for the same work "
                  "(1.00 = no framework overhead; target <= 1.10)", highlight=False)
    est = results.get("grid_estimate")
    if not est:
        return
    grid_table = Table(title=f"the paper's CIFAR-10 grid ({est['grid']}): estimated device time here")
    for col in ("jobs", "count", "hours"):
        grid_table.add_column(col, justify="left" if col == "jobs" else "right")
    for kind, hours in est["hours_by_group"].items():
        grid_table.add_row(kind, f"{est['jobs_by_group'][kind]:,}", f"{hours:,.1f}")
    grid_table.add_row("[bold]total[/]", f"{sum(est['jobs_by_group'].values()):,}", f"[bold]{est['hours']:,.1f}[/]")
    console.print(grid_table)
    note = (f"Priced at the suite rates of {est['rates_of_arch']}"
            + ("" if est["rates_of_arch"] in est["grid_archs"] else
               f", the largest architecture measured; the grid trains {est['grid_archs']}, so the real time is "
               f"longer (run with --arch {est['grid_archs']} to measure it)")
            + f". At the plain loops' rates: {est['hours_at_plain_rates']:,.1f} h.")
    console.print(note, highlight=False)
    if est["not_estimated"]:
        console.print("Not estimated: " + ", ".join(f"{n} {k} job(s)" for k, n in est["not_estimated"].items()),
                      highlight=False)
    for bound, names in est["bounds"].items():
        console.print(f"{bound.capitalize()}s: {', '.join(names)}", highlight=False)
    console.print("Assumptions:", highlight=False)
    for line in est["assumptions"]:
        console.print(f"  - {line}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.speed.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--arch", action="append", help="architecture to measure (repeatable); default: small_cnn, "
                                                        "plus preact_resnet18 when CUDA is used")
    parser.add_argument("--images", type=int, help="training images per timed run (other workloads scale with it)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed runs per side, in alternating order; "
                                                                      "the fastest is kept")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--quick", action="store_true", help=f"tiny sizes ({QUICK_IMAGES} images), for tests")
    parser.add_argument("--no-estimate", action="store_true", help="skip the grid-time estimate (planning ~15 s)")
    args = parser.parse_args(argv)
    if args.images is not None and args.images < 16:
        parser.error("--images must be at least 16")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    # wide enough for the table when the output is a file or a pipe (rich's default there is 80 columns)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    results = run_benchmark(args.device, args.arch, args.images, args.quick, args.repeats,
                            estimate=not args.no_estimate, threads=args.threads, console=console)
    print_results(results, console)
    console.print(f"benchmark took {results['seconds']:.0f} s", highlight=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float))
        console.print(f"results written to {args.json}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
