"""Typed params: one pydantic model per params.yaml section (STYLE.md 6).

Every model forbids unknown keys; ranges are declared on the fields and the
checks that span sections live on :class:`Params`. ``load_params`` turns any
problem into a :class:`ParamsError` whose message is one line naming the key,
the value and what is allowed.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nas_core.registry import nearest

class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FakeDataConfig(Section):
    """Shape of torchvision's FakeData source (smoke tests only)."""

    num_samples: int = Field(512, ge=10)
    image_shape: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = Field(10, ge=2)


class DataConfig(Section):
    """Where the images come from. ``source`` is a registered dataset name
    (``nasflow list``); ``root`` holds its files (relative to the project)."""

    source: str = "digits"
    root: str = "data"
    holdout_test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    image_size: Optional[int] = Field(None, ge=8, description="resize side for imagefolder")
    num_workers: int = Field(0, ge=0)
    fake: FakeDataConfig = FakeDataConfig()


class RuntimeConfig(Section):
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    seed: int = Field(0, ge=0)
    deterministic: bool = True
    threads: Optional[int] = Field(None, ge=1)
    task_runner: Literal["thread", "dask", "ray"] = "thread"
    max_workers: int = Field(2, ge=1)
    dask_address: Optional[str] = None
    dask_n_workers: int = Field(2, ge=1)
    gpus_per_task: float = Field(1.0, ge=0.0)


class TrackingConfig(Section):
    """MLflow. ``uri`` None means ``sqlite:///<project>/mlflow.db``; the
    MLFLOW_TRACKING_URI environment variable wins over both."""

    uri: Optional[str] = None
    experiment: str = Field("nasflow", min_length=1)
    registered_model: str = Field("nasflow-best", min_length=1)
    retries: int = Field(3, ge=0, le=20)


class SubsetConfig(Section):
    """D~ = ``fraction`` of D (stratified), split ``weight_fraction`` /
    rest into weights / architecture parameters (FBNet: 80/20)."""

    fraction: float = Field(0.5, gt=0.0, le=1.0)
    weight_fraction: float = Field(0.8, gt=0.0, lt=1.0)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    probe_size: int = Field(256, ge=1)


class PretrainConfig(Section):
    """FBNet supernet pre-training (reference-notes.md, FBNet)."""

    space: str = "fbnet"
    preset: str = "digits"
    epochs: int = Field(8, ge=1)
    warmup_epochs: int = Field(2, ge=0)
    batch_size: int = Field(64, ge=1)
    theta_batch_size: Optional[int] = Field(
        None, ge=1, description="batch size of the θ steps on train_a (None: batch_size); a small "
        "train_a (digits: ~130 images) needs smaller batches to give θ more than a few steps per epoch")
    w_lr: float = Field(0.1, gt=0)
    w_momentum: float = Field(0.9, ge=0, lt=1)
    w_weight_decay: float = Field(1e-4, ge=0)
    theta_lr: float = Field(0.01, gt=0)
    theta_weight_decay: float = Field(5e-4, ge=0)
    temperature: float = Field(5.0, gt=0)
    temperature_decay: float = Field(0.956, gt=0, le=1)
    alpha: float = Field(0.2, gt=0)
    beta: float = Field(0.6, ge=0)
    latency_unit: Literal["ms", "us"] = "us"
    latency_repeats: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _known_space(self) -> "PretrainConfig":
        from nas_core.spaces import FBNET_PRESETS, SUPERNET_SPACES  # lazy: keeps params loading light

        if self.space not in SUPERNET_SPACES:
            raise CrossFieldError("pretrain.space", self.space,
                                  f"allowed (spaces with a supernet): {', '.join(SUPERNET_SPACES)}")
        if self.space == "fbnet" and self.preset not in FBNET_PRESETS:
            raise CrossFieldError("pretrain.preset", self.preset, f"allowed: {', '.join(FBNET_PRESETS)}")
        return self


class CellSearchConfig(Section):
    """DARTS cell space and its differentiable strategies (darts, pc_darts,
    p_darts, gdas, snas). Paper settings in reference-notes.md; defaults here
    are shrunk so a search on digits (8x8) takes about a minute on 2 cores.

    ``epochs`` is per P-DARTS stage for ``p_darts``. ``unrolled_xi`` None
    uses the current weight learning rate (DARTS). ``pdarts_ops_kept[i]`` is
    the number of ops per edge kept after stage i (length: stages - 1);
    ``skip_dropout[i]`` the initial skip-connect dropout of stage i, decayed
    by exp(-0.2 * epoch-in-stage); ``skip_cap`` is P-DARTS's M. GDAS and SNAS
    anneal their Gumbel temperature linearly from max to min."""

    op_set: str = "darts"
    cells: int = Field(5, ge=1)
    init_channels: int = Field(8, ge=2)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1)
    w_lr: float = Field(0.025, gt=0)
    w_lr_min: float = Field(0.001, ge=0)
    w_momentum: float = Field(0.9, ge=0, lt=1)
    w_weight_decay: float = Field(3e-4, ge=0)
    w_grad_clip: float = Field(5.0, gt=0)
    arch_lr: float = Field(3e-4, gt=0)
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = Field(1e-3, ge=0)
    order: Literal[1, 2] = 1
    unrolled_xi: Optional[float] = Field(None, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    pc_k: int = Field(4, ge=1)
    pc_edge_norm: bool = True
    pdarts_cells: list[int] = [3, 4, 5]
    pdarts_ops_kept: list[int] = [5, 3]
    skip_dropout: list[float] = [0.0, 0.3, 0.6]
    skip_cap: Optional[int] = Field(2, ge=0, le=8)
    gdas_tau_max: float = Field(10.0, gt=0)
    gdas_tau_min: float = Field(0.1, gt=0)
    snas_tau_max: float = Field(1.0, gt=0)
    snas_tau_min: float = Field(0.03, gt=0)
    snas_resource_weight: float = Field(1e-2, ge=0)
    final_cells: int = Field(8, ge=1)
    final_channels: int = Field(16, ge=2)

    @model_validator(mode="after")
    def _consistent(self) -> "CellSearchConfig":
        key = "search.cell."
        if self.warmup_epochs >= self.epochs:
            raise CrossFieldError(key + "warmup_epochs", self.warmup_epochs,
                                  f"must be < search.cell.epochs ({self.epochs})")
        if self.init_channels % self.pc_k:
            raise CrossFieldError(key + "pc_k", self.pc_k,
                                  f"must divide search.cell.init_channels ({self.init_channels})")
        if not self.pdarts_cells or any(c < 1 for c in self.pdarts_cells):
            raise CrossFieldError(key + "pdarts_cells", self.pdarts_cells, "a non-empty list of cell counts >= 1")
        stages = len(self.pdarts_cells)
        kept = self.pdarts_ops_kept
        if len(kept) != stages - 1 or any(k < 2 for k in kept) or any(a <= b for a, b in zip(kept, kept[1:])):
            raise CrossFieldError(key + "pdarts_ops_kept", kept,
                                  f"{stages - 1} strictly decreasing counts >= 2 (one per stage after the first)")
        if len(self.skip_dropout) != stages or any(not 0 <= p < 1 for p in self.skip_dropout):
            raise CrossFieldError(key + "skip_dropout", self.skip_dropout,
                                  f"{stages} rates in [0, 1) (one per search.cell.pdarts_cells stage)")
        for name in ("gdas", "snas"):
            lo, hi = getattr(self, f"{name}_tau_min"), getattr(self, f"{name}_tau_max")
            if lo > hi:
                raise CrossFieldError(key + f"{name}_tau_min", lo, f"must be <= {name}_tau_max ({hi})")
        if self.w_lr_min > self.w_lr:
            raise CrossFieldError(key + "w_lr_min", self.w_lr_min, f"must be <= search.cell.w_lr ({self.w_lr})")
        return self


class SearchConfig(Section):
    """The search strategy (``nasflow list`` shows the registered ones);
    ``cell`` configures the DARTS-cell strategies."""

    strategy: str = "fbnet"
    cell: CellSearchConfig = CellSearchConfig()

    @model_validator(mode="after")
    def _known_strategy(self) -> "SearchConfig":
        from nas_core.strategies import STRATEGIES  # lazy: importing registers every strategy

        if self.strategy not in STRATEGIES:
            hint = nearest(self.strategy, STRATEGIES.names())
            did = f"; did you mean {hint!r}?" if hint else ""
            raise CrossFieldError("search.strategy", self.strategy, f"allowed: {', '.join(STRATEGIES.names())}{did}")
        return self


class DcnasSampleConfig(Section):
    num_samples: int = Field(2000, ge=1, le=10**9)


class DcnasFeaturesConfig(Section):
    """Eq. 7 (``output``) or Eq. 6 (``params``) over ``epochs`` saved
    checkpoints (None: all of them). ``bn`` picks the BatchNorm statistics:
    ``running`` (stored statistics, eval mode) or ``batch`` (probe batch)."""

    method: Literal["output", "params"] = "output"
    epochs: Optional[list[int]] = None
    bn: Literal["running", "batch"] = "running"
    probe_batch_size: int = Field(256, ge=1)
    memory_mb: int = Field(1024, ge=16)


class DcnasClusterConfig(Section):
    k: int = Field(5, ge=1)
    minibatch_threshold: int = Field(100_000, ge=1)
    selection: Literal["eq9", "eq9_log", "eq8"] = "eq9"
    top_m: int = Field(3, ge=1)
    silhouette_sample: int = Field(2000, ge=10)


class EvaluateConfig(Section):
    """Early-stopping evaluation on D~ (Eq. 8) inside each cluster."""

    epochs: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)


class RetrainConfig(Section):
    """Full training of the finalists on D (Eq. 10), cosine schedule."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(4e-5, ge=0)
    augment: bool = True
    include_baseline: bool = True


class AblationConfig(Section):
    """Table-1 ablation on the channel-ratio space (dc-nas.md §4.1): ``num_archs``
    separately trained networks (``epochs`` = η max on D~), the grid
    ``eta_list`` × ``k_list`` (K=1 is global early stopping), random search
    with a budget of ``int(rs_fraction * num_archs) + K`` fully trained
    networks repeated ``rs_repeats`` times, full training for ``full_epochs``
    on D. ``ground_truth`` fully trains every sampled network (regret,
    Kendall tau). ``strides`` down-sample per layer (8x8 digits: 1,1,2,1,2,1)."""

    base_widths: list[int] = Field(default_factory=lambda: [8, 8, 16, 16, 32, 32], min_length=6, max_length=6)
    ratios: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0], min_length=2)
    strides: list[int] = Field(default_factory=lambda: [1, 1, 2, 1, 2, 1], min_length=6, max_length=6)
    num_archs: int = Field(60, ge=2, le=15625)
    epochs: int = Field(6, ge=2)
    eta_list: list[int] = Field(default_factory=lambda: [2, 4, 6], min_length=1)
    k_list: list[int] = Field(default_factory=lambda: [1, 3, 5, 10], min_length=1)
    features: Literal["output", "params"] = "output"
    full_epochs: int = Field(10, ge=1)
    rs_fraction: float = Field(0.01, ge=0.0, le=1.0)
    rs_repeats: int = Field(20, ge=1)
    ground_truth: bool = True
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)


class Params(Section):
    data: DataConfig = DataConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    tracking: TrackingConfig = TrackingConfig()
    subset: SubsetConfig = SubsetConfig()
    pretrain: PretrainConfig = PretrainConfig()
    search: SearchConfig = SearchConfig()
    dcnas_sample: DcnasSampleConfig = DcnasSampleConfig()
    dcnas_features: DcnasFeaturesConfig = DcnasFeaturesConfig()
    dcnas_cluster: DcnasClusterConfig = DcnasClusterConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    retrain: RetrainConfig = RetrainConfig()
    ablation: AblationConfig = AblationConfig()

    @model_validator(mode="after")
    def _cross_section(self) -> "Params":
        for check in CROSS_CHECKS:
            check(self)
        return self


class CrossFieldError(ValueError):
    """A check spanning keys failed; ``key`` is the dotted key to blame."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key} = {value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def _warmup_before_end(p: Params) -> None:
    if p.pretrain.warmup_epochs >= p.pretrain.epochs:
        raise CrossFieldError("pretrain.warmup_epochs", p.pretrain.warmup_epochs,
                              f"must be < pretrain.epochs ({p.pretrain.epochs})")


def _k_not_above_samples(p: Params) -> None:
    if p.dcnas_cluster.k > p.dcnas_sample.num_samples:
        raise CrossFieldError("dcnas_cluster.k", p.dcnas_cluster.k,
                              f"must be <= dcnas_sample.num_samples ({p.dcnas_sample.num_samples})")


def _feature_epochs_saved(p: Params) -> None:
    epochs = p.dcnas_features.epochs
    if epochs is None:
        return
    source, saved = _saved_epochs(p)
    bad = [e for e in epochs if not 1 <= e <= saved]
    if bad or len(epochs) < 2 or sorted(set(epochs)) != list(epochs):
        raise CrossFieldError("dcnas_features.epochs", epochs,
                              f"at least 2 increasing saved epochs in 1..{source} ({saved})")


def _saved_epochs(p: Params) -> tuple[str, int]:
    """Which checkpoints DC-NAS reads: the pretrain stage's (FBNet) or the
    cell search's (all P-DARTS stages together)."""
    if p.search.strategy == "fbnet":
        return "pretrain.epochs", p.pretrain.epochs
    cell = p.search.cell
    if p.search.strategy == "p_darts":
        return "search.cell.epochs x len(search.cell.pdarts_cells)", cell.epochs * len(cell.pdarts_cells)
    return "search.cell.epochs", cell.epochs


def _splits_leave_data(p: Params) -> None:
    used = p.data.holdout_test_fraction + p.subset.val_fraction
    if used >= 0.9:
        raise CrossFieldError("subset.val_fraction", p.subset.val_fraction,
                              f"with data.holdout_test_fraction ({p.data.holdout_test_fraction}) "
                              "must leave at least 10% of the data for training")


def _ablation_grid_fits(p: Params) -> None:
    a = p.ablation
    if any(r <= 0 for r in a.ratios) or len(set(a.ratios)) != len(a.ratios):
        raise CrossFieldError("ablation.ratios", a.ratios, "distinct positive channel ratios")
    if any(w < 1 for w in a.base_widths) or any(s not in (1, 2) for s in a.strides):
        raise CrossFieldError("ablation.base_widths", a.base_widths, "widths >= 1 and ablation.strides in {1, 2}")
    if any(not 2 <= e <= a.epochs for e in a.eta_list):
        raise CrossFieldError("ablation.eta_list", a.eta_list,
                              f"every eta must be in 2..ablation.epochs ({a.epochs}); eta=1 gives constant features")
    budget = max(a.k_list) + int(a.rs_fraction * a.num_archs)
    if min(a.k_list) < 1 or budget > a.num_archs:
        raise CrossFieldError("ablation.k_list", a.k_list,
                              f"K >= 1 and max(K) + int(rs_fraction * num_archs) <= ablation.num_archs ({a.num_archs})")


CROSS_CHECKS = [_warmup_before_end, _k_not_above_samples, _feature_epochs_saved, _splits_leave_data,
                _ablation_grid_fits]


class ParamsError(ValueError):
    """Bad params: the message is one line (key, value, what is allowed)."""


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    raw = read_params_file(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    return validate_params(raw, source=str(path))


def read_params_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (expected a YAML mapping of sections)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted keys (``subset.fraction``) set."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ParamsError(f"override {dotted}: {part!r} is not a section")
            node = child
        node[leaf] = value
    return out


def validate_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(f"{source}: {describe_error(exc.errors()[0])}") from None


def describe_error(err: dict[str, Any]) -> str:
    """One line for the first pydantic error: key, value, what is allowed."""
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    ctx = err.get("ctx") or {}
    if isinstance(ctx.get("error"), CrossFieldError):
        cross = ctx["error"]
        return f"{cross.key} = {cross.value!r}: {cross.allowed}"
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = nearest(loc[-1], allowed)
        did = f"; did you mean {'.'.join(loc[:-1] + [hint])!r}?" if hint else ""
        return f"{key}: unknown key (allowed: {', '.join(allowed)}){did}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key} = {err.get('input')!r}: {msg}"


def _fields_at(loc: list[str]) -> list[str]:
    model: Any = Params
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def section_dict(params: Params, name: str) -> dict[str, Any]:
    """A section as plain data (for logging to MLflow)."""
    return getattr(params, name).model_dump(mode="json")
