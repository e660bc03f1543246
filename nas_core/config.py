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
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from nas_core.evaluators import EVALUATORS, EvaluatorName
from nas_core.registry import nearest
from nas_core.sections import CrossFieldError, Section
from nas_core.spaces import SPACES
from nas_core.strategies import STRATEGIES


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
    """D~ = ``fraction`` of D (stratified); its split into weights /
    architecture parameters is the strategy's ``weight_fraction``."""

    fraction: float = Field(0.5, gt=0.0, le=1.0)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    probe_size: int = Field(256, ge=1)


class SearchConfig(Section):
    """Which strategy searches which space (``nasflow list`` shows the
    registered ones). The strategy's settings are ``strategies.<strategy>``,
    the space's ``spaces.<space>``; the strategy must support the space."""

    strategy: str = "fbnet"
    space: str = "layerwise"

    @model_validator(mode="after")
    def _known_pair(self) -> "SearchConfig":
        for key, registry in (("strategy", STRATEGIES), ("space", SPACES)):
            value = getattr(self, key)
            if value not in registry:
                hint = nearest(value, registry.names())
                did = f"; did you mean {hint!r}?" if hint else ""
                raise CrossFieldError(f"search.{key}", value, f"allowed: {', '.join(registry.names())}{did}")
        supported = STRATEGIES.get(self.strategy).spaces
        if self.space not in supported:
            raise CrossFieldError("search.space", self.space,
                                  f"strategy {self.strategy!r} searches {', '.join(supported)}")
        return self


def _registry_section(registry: Any, model_name: str, doc: str) -> type[Section]:
    """A section with one sub-section per registered entry, each validated
    by the entry's own ``Config`` model (its defaults when absent)."""
    fields = {name: (registry.get(name).Config, registry.get(name).Config()) for name in registry.names()}
    return create_model(model_name, __base__=Section, __doc__=doc, **fields)


SpacesConfig = _registry_section(SPACES, "SpacesConfig", "One section per registered search space.")
StrategiesConfig = _registry_section(STRATEGIES, "StrategiesConfig",
                                     "One section per registered strategy, with its paper's defaults.")
EvaluatorsConfig = _registry_section(EVALUATORS, "EvaluatorsConfig",
                                     "One section per registered evaluator (genotype -> metrics).")


class DcnasSampleConfig(Section):
    num_samples: int = Field(2000, ge=1, le=10**9)


class DcnasFeaturesConfig(Section):
    """Eq. 7 (``output``) or Eq. 6 (``params``) over ``epochs`` saved
    checkpoints (None: all of them). ``bn`` picks the BatchNorm statistics:
    ``running`` (stored statistics, eval mode) or ``batch`` (probe batch).
    Eq. 7 only: ``batched`` evaluates the trie nodes of a depth that apply
    the same op in one call (with ``bn: running``; ``bn: batch`` walks per
    node); ``partitions`` splits the trie into that many tasks on the
    stage's task runner (None: ``runtime``'s worker count; 1: in the stage's
    process). Both give the same features bit for bit."""

    method: Literal["output", "params"] = "output"
    epochs: Optional[list[int]] = None
    bn: Literal["running", "batch"] = "running"
    probe_batch_size: int = Field(256, ge=1)
    memory_mb: int = Field(1024, ge=16)
    batched: bool = True
    partitions: Optional[int] = Field(None, ge=1)


class DcnasClusterConfig(Section):
    k: int = Field(5, ge=1)
    minibatch_threshold: int = Field(100_000, ge=1)
    selection: Literal["eq9", "eq9_log", "eq8"] = "eq9"
    top_m: int = Field(3, ge=1)
    silhouette_sample: int = Field(2000, ge=10)


class EvaluateConfig(Section):
    """Per-cluster evaluation (Eq. 8): ``evaluator`` scores each cluster's
    candidates (``train``: early-stopped training on D~ for ``epochs``
    epochs with ``evaluators.train``'s settings; ``zero_cost`` / ``supernet``:
    without training, ``epochs`` unused)."""

    evaluator: EvaluatorName = "train"
    epochs: int = Field(2, ge=1)


class RetrainConfig(Section):
    """Full training of the finalists on D (Eq. 10), cosine schedule:
    the K cluster picks, the search strategy's own genotype
    (``include_baseline``) and, with ``random_control``, random genotypes of
    the space at the compute DC-NAS's selection spent (tasks/stages/retrain.py).
    Each finalist's gradient confusion (nas_core.train.confusion) is the
    mean of ``zeta_iterations`` draws of ``zeta_batches`` mini-batches
    (StacNAS's procedure and defaults)."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(4e-5, ge=0)
    augment: bool = True
    include_baseline: bool = True
    random_control: bool = True
    zeta_iterations: int = Field(10, ge=1, description="gradient-confusion draws per finalist (StacNAS: 10)")
    zeta_batches: int = Field(4, ge=2, description="mini-batches per gradient-confusion draw")


# Named settings of the Table-1 study (``ablation.preset``); any key set next to the
# preset in params.yaml wins over the preset's value.
#
# ``paper`` -- the paper's regime (dc-nas.md §4.1), scaled to the embedded
# digits data: D~ = 10 % of D (paper: 10 %), early stopping at η of 2, 3 and 4
# epochs against 30 epochs of full training (7-13 %; paper: η ∈ {5, 10, 20,
# 30} of 200, i.e. 2.5-15 %; η = 1 is excluded because every feature is 1 at
# the first epoch), K ∈ {1, 3, 5, 10} (paper: up to 50), s = 40 sampled
# networks (paper: all 15,625 of the space) so that three replicates with
# every network fully trained fit in about half an hour on 2 CPU cores.
# Early stopping is then far from the final answer, which is where the paper
# finds that clustering matters.
#
# ``smoke`` -- the fast settings the study ran with before presets: D~ = 50 %
# of D, η up to 6 of 10 full epochs, s = 60. Early stopping here is nearly
# the final answer; use it to check that the study runs, not to judge DC-NAS.
ABLATION_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"num_archs": 40, "subset_fraction": 0.1, "epochs": 4, "eta_list": [2, 3, 4],
              "k_list": [1, 3, 5, 10], "full_epochs": 30},
    "smoke": {"num_archs": 60, "subset_fraction": 0.5, "epochs": 6, "eta_list": [2, 4, 6],
              "k_list": [1, 3, 5, 10], "full_epochs": 10},
}


class AblationConfig(Section):
    """Table-1 study on the channel-ratio space (dc-nas.md §4.1; the space's
    widths, ratios and strides are ``spaces.channel_ratio``).

    ``preset`` (``paper`` | ``smoke``, :data:`ABLATION_PRESETS`) fills
    ``num_archs``, ``subset_fraction``, ``epochs``, ``eta_list``, ``k_list``
    and ``full_epochs``; a key given beside it wins. Per replicate:
    ``num_archs`` networks sampled from the space, trained separately for
    ``epochs`` (η max) on D~ = ``subset_fraction`` of D (drawn per
    replicate, stratified); the grid ``eta_list`` × ``k_list`` (K = 1 is
    global early stopping); random search at ``rs_budget`` =
    ``equal_compute`` (floor(s σ η / full_epochs) + K networks, the paper's
    156 + K at its settings) or ``fraction`` (int(rs_fraction · s) + K, the
    paper's fixed 1 %), ``rs_repeats`` draws; full training for
    ``full_epochs`` on D. ``ground_truth`` fully trains every sampled
    network (regret, Kendall τ). ``repeats`` independent replicates (new
    sampled set, new D~, new training seeds) give means with 95 % CIs and
    paired tests (nas_core/ablation/stats.py)."""

    preset: Literal["paper", "smoke"] = "paper"
    repeats: int = Field(1, ge=1, le=1000)
    num_archs: int = Field(40, ge=2, le=15625)
    subset_fraction: float = Field(0.1, gt=0.0, le=1.0)
    epochs: int = Field(4, ge=2)
    eta_list: list[int] = Field(default_factory=lambda: [2, 3, 4], min_length=1)
    k_list: list[int] = Field(default_factory=lambda: [1, 3, 5, 10], min_length=1)
    features: Literal["output", "params"] = "output"
    full_epochs: int = Field(30, ge=1)
    rs_budget: Literal["equal_compute", "fraction"] = "equal_compute"
    rs_fraction: float = Field(0.01, ge=0.0, le=1.0)
    rs_repeats: int = Field(20, ge=1)
    ground_truth: bool = True
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "paper")
        if preset not in ABLATION_PRESETS:
            raise CrossFieldError("ablation.preset", preset, f"allowed: {', '.join(ABLATION_PRESETS)}")
        return {**ABLATION_PRESETS[preset], **data}


class Params(Section):
    data: DataConfig = DataConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    tracking: TrackingConfig = TrackingConfig()
    subset: SubsetConfig = SubsetConfig()
    search: SearchConfig = SearchConfig()
    spaces: SpacesConfig = SpacesConfig()
    strategies: StrategiesConfig = StrategiesConfig()
    evaluators: EvaluatorsConfig = EvaluatorsConfig()
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


def _k_not_above_samples(p: Params) -> None:
    if p.dcnas_cluster.k > p.dcnas_sample.num_samples:
        raise CrossFieldError("dcnas_cluster.k", p.dcnas_cluster.k,
                              f"must be <= dcnas_sample.num_samples ({p.dcnas_sample.num_samples})")


def _feature_epochs_ordered(p: Params) -> None:
    """Which epochs exist is known once the supernet is trained (the
    dcnas_features stage names the saved ones); here: at least 2, increasing."""
    epochs = p.dcnas_features.epochs
    if epochs is not None and (len(epochs) < 2 or min(epochs) < 1 or sorted(set(epochs)) != list(epochs)):
        raise CrossFieldError("dcnas_features.epochs", epochs, "at least 2 increasing epochs >= 1 (or null: all)")


def _splits_leave_data(p: Params) -> None:
    used = p.data.holdout_test_fraction + p.subset.val_fraction
    if used >= 0.9:
        raise CrossFieldError("subset.val_fraction", p.subset.val_fraction,
                              f"with data.holdout_test_fraction ({p.data.holdout_test_fraction}) "
                              "must leave at least 10% of the data for training")


def _ablation_grid_fits(p: Params) -> None:
    a = p.ablation
    if any(not 2 <= e <= a.epochs for e in a.eta_list):
        raise CrossFieldError("ablation.eta_list", a.eta_list,
                              f"every eta must be in 2..ablation.epochs ({a.epochs}); eta=1 gives constant features")
    fixed = int(a.rs_fraction * a.num_archs) if a.rs_budget == "fraction" else 0
    if min(a.k_list) < 1 or max(a.k_list) + fixed > a.num_archs:
        extra = " + int(rs_fraction * num_archs)" if fixed else ""
        raise CrossFieldError("ablation.k_list", a.k_list,
                              f"K >= 1 and max(K){extra} <= ablation.num_archs ({a.num_archs})")


CROSS_CHECKS = [_k_not_above_samples, _feature_epochs_ordered, _splits_leave_data, _ablation_grid_fits]


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
    _check_complete(path, raw)
    return raw


def _check_complete(path: Path, raw: dict[str, Any]) -> None:
    """Every top-level section must be in the file: dvc.yaml reads each
    stage's params from it, so an empty or cut-off file would run on
    defaults DVC never sees. (Keys inside a section may be left out: they
    take the documented defaults, like any optional setting.)"""
    missing = [name for name in Params.model_fields if name not in raw]
    if missing:
        what = "empty params file" if not raw else "truncated or incomplete params file"
        raise ParamsError(f"{path}: {what}: missing sections {', '.join(missing)} (every section of params.yaml "
                          "must be present; dvc.yaml reads the stages' params from this file)")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``) -> {dotted key: YAML value}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParamsError(f"--set {item!r}: expected KEY=VALUE, e.g. subset.fraction=0.5")
        out[key] = yaml.safe_load(value)
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted keys (``subset.fraction``) set.
    The space follows the strategy: an override of ``search.strategy``
    without one of ``search.space`` also sets the space to the strategy's
    first supported space when the current one is not supported."""
    overrides = _space_follows_strategy(raw, overrides)
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


def _space_follows_strategy(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    strategy = overrides.get("search.strategy")
    if strategy not in STRATEGIES or "search.space" in overrides:
        return overrides
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    supported = STRATEGIES.get(strategy).spaces
    if search.get("space", SearchConfig().space) in supported:
        return overrides
    return {**overrides, "search.space": supported[0]}


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
