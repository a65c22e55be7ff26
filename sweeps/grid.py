"""Grid files: YAML naming datasets, architectures, attacks, defenses,
re-activation methods and seeds, plus per-stage settings. A grid expands into
one `CellSpec` per dataset x arch x attack x seed; every name and value is
checked before anything runs.

    name: demo
    datasets: [fashion_mnist]
    archs: [small_cnn]
    attacks: [badnets, blended]        # or: all
    defenses: [none, ft, nad]          # or: all
    reactivations: [wba]               # or: all
    seeds: [0]
    cell: {epochs: 3, epsilon: 0.05}   # any other CellSpec field
    attack_params: {badnets: {size: 4}, wanet: {cross_ratio: 1}}  # per attack: its trigger's and its
                                       # training module's options
    defense_params: {ft: {epochs: 20}}
    reactivation_params: {wba: {epochs: 10}}
    per_arch:                          # optional: one architecture's own attacks, seeds,
      preact_resnet18-w16: {seeds: [0], defenses: [ft-sam, fst], cell: {epochs: 20}}
                                       # defenses and cell settings (a capacity ladder:
                                       # sweeps/reproduce.yaml)
    executor: {jobs_per_gpu: 1, cpu_workers: 1}  # or {backend: slurm, ...}: sweeps/slurm.py
    kind: classifier                   # the model family; or clip: CLIP cells
                                       # (benchmark/cell/families/clip.py fields under
                                       # `cell`; CLIP attacks and defenses)
    store: store                       # artifact store (shared by grids)
    output: runs/demo                  # report, logs, W&B runs
    data_dir: data
    wandb_project: backdoor-reactivation
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmark.cell.family import family, family_names
from benchmark.cell.spec import SpecBase
from benchmark.errors import ConfigError
from lightning_modules.reactivation import REACTIVATIONS

GRIDDED = ("dataset", "arch", "attack", "seed", "defenses", "reactivations", "defense_params",
           "reactivation_params", "trigger_params", "attack_params")
KINDS = tuple(family_names())


def cell_fields(kind: str) -> list[str]:
    """The spec fields a grid's `cell:` may set for a model family."""
    return [f.name for f in dataclasses.fields(family(kind).spec_class) if f.name not in GRIDDED]

EXECUTOR_FIELDS = {"backend": "local", "jobs_per_gpu": 1, "cpu_workers": 1, "checkpoint_every": 5, "compile": False}
BACKENDS = ("local", "slurm")


@dataclass
class Grid:
    name: str
    path: Path
    datasets: list[str]
    archs: list[str]
    attacks: list[str]
    defenses: list[str]
    reactivations: list[str]
    seeds: list[int]
    cell: dict = field(default_factory=dict)
    attack_params: dict = field(default_factory=dict)
    defense_params: dict = field(default_factory=dict)
    reactivation_params: dict = field(default_factory=dict)
    executor: dict = field(default_factory=lambda: dict(EXECUTOR_FIELDS))
    store: Path = Path("store")
    output: Path = Path("runs")
    data_dir: Path = Path("data")
    wandb_project: str = "backdoor-reactivation"
    kind: str = "classifier"
    #: per architecture: its own "attacks", "seeds", "defenses" and "cell" settings (merged
    #: over the grid's), so that a ladder of capacities can give each rung what
    #: its cost allows
    per_arch: dict = field(default_factory=dict)

    def arch_settings(self, arch: str) -> tuple[list[str], list[int], list[str], dict]:
        """(attacks, seeds, defenses, cell settings) of `arch`: the grid's,
        with its `per_arch` entry applied."""
        own = self.per_arch.get(arch, {})
        return (list(own.get("attacks", self.attacks)), list(own.get("seeds", self.seeds)),
                list(own.get("defenses", self.defenses)), {**self.cell, **own.get("cell", {})})

    def cells(self) -> list[SpecBase]:
        spec_class = family(self.kind).spec_class
        specs = []
        for dataset in self.datasets:
            for arch in self.archs:
                attacks, seeds, defenses, cell = self.arch_settings(arch)
                for attack in attacks:
                    for seed in seeds:
                        # A classifier attack's options go to its training module or its
                        # trigger by name (CellSpec.validate); a CLIP attack's are its trigger's.
                        options = {family(self.kind).attack_options_field: self.attack_params.get(attack, {})}
                        spec = spec_class(dataset=dataset, arch=arch, attack=attack, seed=seed,
                                        defenses=tuple(defenses), reactivations=tuple(self.reactivations),
                                        defense_params=self.defense_params,
                                        reactivation_params=self.reactivation_params, **options, **cell)
                        spec.validate()
                        specs.append(spec)
        return specs


def _names(raw: dict, key: str, registry, path: Path, exclude=()) -> list[str]:
    value = raw.get(key)
    everything = [n for n in registry.names() if n not in exclude]
    if value == "all":
        return everything
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: '{key}' must be a non-empty list of names or 'all' "
                          f"(choices: {', '.join(everything)})")
    for name in value:
        registry.get(name)  # unknown -> UnknownNameError listing the choices
    return value


def _plain_list(raw: dict, key: str, path: Path, kind=str) -> list:
    value = raw.get(key)
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                           for v in value):
        raise ConfigError(f"{path}: '{key}' must be a non-empty list of {kind.__name__}s")
    return value


PER_ARCH_FIELDS = ("attacks", "seeds", "defenses", "cell")


def _per_arch(raw: dict, path: Path, archs: list[str], attack_registry, defense_registry,
              cell_fields: list[str]) -> dict:
    """The checked `per_arch` mapping: architecture (one of `archs`) -> its
    own attacks, seeds, defenses and cell settings."""
    value = raw.get("per_arch") or {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(f"{path}: 'per_arch' maps an architecture of 'archs' to its own "
                          f"{', '.join(PER_ARCH_FIELDS)}")
    out = {}
    for arch, own in value.items():
        where = f"{path}: per_arch.{arch}"
        if arch not in archs:
            raise ConfigError(f"{where}: {arch!r} is not in 'archs' ({', '.join(archs)})")
        unknown = sorted(set(own) - set(PER_ARCH_FIELDS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(PER_ARCH_FIELDS)}")
        checked = {}
        if "seeds" in own:
            checked["seeds"] = _plain_list(own, "seeds", Path(where), int)
            if any(s < 0 for s in checked["seeds"]):
                raise ConfigError(f"{where}: seeds must be non-negative, got {checked['seeds']}")
        if "attacks" in own:
            checked["attacks"] = _names(own, "attacks", attack_registry, Path(where), exclude=("clean",))
        if "defenses" in own:
            checked["defenses"] = _names(own, "defenses", defense_registry, Path(where))
        if "cell" in own:
            cell = own["cell"]
            if not isinstance(cell, dict) or set(cell) - set(cell_fields):
                raise ConfigError(f"{where}: 'cell' accepts {', '.join(cell_fields)}; got {sorted(cell or {})}")
            checked["cell"] = dict(cell)
        out[str(arch)] = checked
    return out


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a grid file is a YAML mapping (see sweeps/demo.yaml)")
    allowed = {f.name for f in dataclasses.fields(Grid)} - {"path"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    from datamodules import DATASETS

    kind = raw.get("kind", "classifier")
    if kind not in KINDS:
        raise ConfigError(f"{path}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    attack_registry, defense_registry = family(kind).attacks, family(kind).defenses
    allowed_cell = cell_fields(kind)
    datasets = _names(raw, "datasets", DATASETS, path)
    archs = _plain_list(raw, "archs", path)
    seeds = _plain_list(raw, "seeds", path, int)
    if any(s < 0 for s in seeds):
        raise ConfigError(f"{path}: seeds must be non-negative, got {seeds}")
    attacks = _names(raw, "attacks", attack_registry, path, exclude=("clean",))
    defenses = _names(raw, "defenses", defense_registry, path)
    reactivations = _names(raw, "reactivations", REACTIVATIONS, path)
    cell = raw.get("cell") or {}
    if not isinstance(cell, dict) or set(cell) - set(allowed_cell):
        raise ConfigError(f"{path}: 'cell' accepts {', '.join(allowed_cell)}; got {sorted(cell)}")
    executor = {**EXECUTOR_FIELDS, **(raw.get("executor") or {})}
    if executor["backend"] not in BACKENDS:
        raise ConfigError(f"{path}: executor.backend must be one of {', '.join(BACKENDS)}, "
                          f"got {executor['backend']!r}")
    if executor["backend"] == "slurm":
        from sweeps.slurm_settings import check_settings

        executor = {**executor, **check_settings(executor, str(path))}
    elif set(executor) - set(EXECUTOR_FIELDS):
        raise ConfigError(f"{path}: 'executor' accepts {', '.join(EXECUTOR_FIELDS)} (and the SLURM settings "
                          f"with backend: slurm; see sweeps/slurm.py)")
    if not isinstance(executor["compile"], bool):
        raise ConfigError(f"{path}: executor.compile must be true or false, got {executor['compile']!r}")
    for key in ("jobs_per_gpu", "cpu_workers", "checkpoint_every"):
        value = executor[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{path}: executor.{key} must be a positive integer, got {value!r}")
    for key, registry in (("attack_params", attack_registry), ("defense_params", defense_registry),
                          ("reactivation_params", REACTIVATIONS)):
        value = raw.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ConfigError(f"{path}: '{key}' maps a method name to its parameters")
        for name in value:
            registry.get(name)
    per_arch = _per_arch(raw, path, archs, attack_registry, defense_registry, allowed_cell)
    name = str(raw.get("name") or path.stem)
    grid = Grid(name=name, path=path, datasets=datasets, archs=archs, attacks=attacks, defenses=defenses,
                reactivations=reactivations, seeds=seeds, cell=cell, attack_params=raw.get("attack_params") or {},
                defense_params=raw.get("defense_params") or {},
                reactivation_params=raw.get("reactivation_params") or {}, executor=executor,
                store=Path(raw.get("store", "store")), output=Path(raw.get("output", f"runs/{name}")),
                data_dir=Path(raw.get("data_dir", "data")),
                wandb_project=str(raw.get("wandb_project", "backdoor-reactivation")), kind=kind,
                per_arch=per_arch)
    grid.cells()  # every value checked now, before any job
    return grid
