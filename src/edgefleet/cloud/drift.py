"""Drift of a model version's inputs as its control model sees them, from telemetry history.

Flow: ``telemetry_store.control_periods`` → two windows of periods (``select_windows``):
the *reference* (the first ``reference_periods`` periods after the version became control,
or an explicit time window) and the *current* one (the newest ``current_periods`` periods,
never overlapping the reference) → per window, the summed confidence histogram and class
counts (``aggregate``) → a score per column → ``DriftResult``.

Columns: ``confidence`` (the control model's top score) and ``predicted_class``. Devices
send aggregates, not frames, so Evidently gets *reconstructed* samples
(``samples_frame``): each histogram bin's count becomes that many values spread evenly
inside the bin, each class count that many rows of the label, both scaled down
proportionally to at most ``max_rows`` rows (largest remainder), the class column
shuffled with a fixed seed. Joint structure between the two columns is lost (each column
is compared on its own), and values inside a bin are approximated as uniform.

Score: the Jensen-Shannon distance (natural log, so 0 ≤ score ≤ √ln2 ≈ 0.83) per column,
through Evidently's ``ValueDrift(method="jensenshannon")`` when Evidently is installed
(the ``drift`` extra), else computed here directly on the histograms (``engine="native"``,
same formula, Evidently re-bins into 30 bins so the two differ slightly). The version's
drift score is the worst column's; ``drifted`` when it reaches ``threshold`` (default 0.1,
Evidently's default for this method). Too little data in either window gives
``status="insufficient_data"`` and ``score=None`` — a rollout gate reads that as pending.
"""

from __future__ import annotations

import html
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field
from sqlmodel import Session

from .devices.telemetry_store import TelemetryPeriod, control_periods
from .errors import BadRequest, CloudError

log = logging.getLogger(__name__)

Engine = Literal["auto", "evidently", "native"]
COLUMNS = ("confidence", "predicted_class")


class DriftUnavailable(CloudError):
    """Evidently is not installed (or failed to import); only the native score is available."""

    status_code = 501


class _HasRef(Protocol):
    name: str
    version: str


@dataclass(frozen=True)
class DriftConfig:
    reference_periods: int = 30
    current_periods: int = 30
    min_frames: int = 100
    threshold: float = 0.1
    max_rows: int = 5000
    engine: Engine = "auto"
    # gates and the API wait for Evidently's import under "auto"; pages answer natively meanwhile
    wait_for_evidently: bool = True
    reference_start: datetime | None = None  # an explicit reference window replaces the first N periods
    reference_end: datetime | None = None


class WindowInfo(BaseModel):
    start: datetime | None = None
    end: datetime | None = None
    periods: int = 0
    frames: int = 0
    devices: int = 0
    confidence_histogram: list[int] = Field(default_factory=list)
    class_counts: dict[str, int] = Field(default_factory=dict)


class ColumnDrift(BaseModel):
    column: str
    method: str = "jensenshannon"
    score: float
    threshold: float
    drifted: bool


class DriftResult(BaseModel):
    model: str
    status: Literal["ok", "insufficient_data"]
    score: float | None = None
    drifted: bool | None = None
    threshold: float
    engine: Literal["evidently", "native"] | None = None
    reason: str = ""
    reference: WindowInfo
    current: WindowInfo
    columns: list[ColumnDrift] = Field(default_factory=list)
    computed_at: datetime


# ----- pure parts -----


def model_label(model: str | _HasRef) -> tuple[str, str]:
    if isinstance(model, str):
        name, sep, version = model.partition(":")
        if not sep or not name or not version:
            raise BadRequest(f"model must be NAME:VERSION, got {model!r}")
        return name, version
    return model.name, model.version


def aggregate(periods: Sequence[TelemetryPeriod]) -> WindowInfo:
    """Sum histograms and class counts of a window's periods."""
    bins = max((len(p.confidence_histogram) for p in periods), default=0)
    hist = [0] * bins
    classes: dict[str, int] = {}
    for p in periods:
        if len(p.confidence_histogram) == bins:
            for i, c in enumerate(p.confidence_histogram):
                hist[i] += int(c)
        for label, c in p.class_counts.items():
            classes[label] = classes.get(label, 0) + int(c)
    ends = [p.period_end for p in periods]
    starts = [p.period_start for p in periods]
    return WindowInfo(
        start=min(starts) if starts else None, end=max(ends) if ends else None, periods=len(periods),
        frames=sum(p.frames for p in periods), devices=len({p.device_id for p in periods}),
        confidence_histogram=hist, class_counts=dict(sorted(classes.items())),
    )


def select_windows(
    oldest_first: Sequence[TelemetryPeriod], newest_first: Sequence[TelemetryPeriod], config: DriftConfig,
) -> tuple[list[TelemetryPeriod], list[TelemetryPeriod]]:
    """Reference = the first ``reference_periods`` (or all of ``oldest_first`` when the window
    is explicit); current = the newest ``current_periods`` that are not in the reference."""
    explicit = config.reference_start is not None or config.reference_end is not None
    reference = list(oldest_first) if explicit else list(oldest_first[: config.reference_periods])
    taken = {p.id for p in reference}
    current = [p for p in newest_first if p.id not in taken][: config.current_periods]
    current.reverse()
    return reference, current


def scale_counts(counts: Sequence[int], n: int) -> list[int]:
    """Scale non-negative counts to sum to ``n`` (largest remainder), keeping proportions."""
    total = sum(counts)
    if total <= 0 or n <= 0:
        return [0] * len(counts)
    exact = [c * n / total for c in counts]
    out = [int(math.floor(x)) for x in exact]
    order = sorted(range(len(counts)), key=lambda i: (out[i] - exact[i], i))
    for i in order[: n - sum(out)]:
        out[i] += 1
    return out


def samples_frame(window: WindowInfo, max_rows: int) -> Any:
    """Reconstructed per-frame samples of a window as a pandas DataFrame (see the module doc)."""
    import numpy as np
    import pandas as pd

    hist, classes = window.confidence_histogram, window.class_counts
    n = min(max_rows, max(sum(hist), sum(classes.values())))
    data: dict[str, Any] = {}
    if sum(hist) > 0:
        bins = len(hist)
        values: list[float] = []
        for i, c in enumerate(scale_counts(hist, n)):
            values.extend((i + (k + 0.5) / c) / bins for k in range(c))
        data["confidence"] = values
    if sum(classes.values()) > 0:
        labels = list(classes)
        rows: list[str] = []
        for label, c in zip(labels, scale_counts([classes[x] for x in labels], n)):
            rows.extend([label] * c)
        rng = np.random.default_rng(0)
        data["predicted_class"] = [rows[i] for i in rng.permutation(len(rows))]
    return pd.DataFrame(data)


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance (natural log) of two count vectors of equal length."""
    sp, sq = float(sum(p)), float(sum(q))
    if sp <= 0 or sq <= 0:
        return 0.0
    pn = [x / sp for x in p]
    qn = [x / sq for x in q]
    m = [(a + b) / 2 for a, b in zip(pn, qn)]

    def kl(a: list[float]) -> float:
        return sum(x * math.log(x / y) for x, y in zip(a, m) if x > 0)

    return math.sqrt(max(0.0, (kl(pn) + kl(qn)) / 2))


def native_columns(reference: WindowInfo, current: WindowInfo, threshold: float) -> list[ColumnDrift]:
    out: list[ColumnDrift] = []
    rh, ch = reference.confidence_histogram, current.confidence_histogram
    if rh and len(rh) == len(ch) and sum(rh) and sum(ch):
        s = js_distance(rh, ch)
        out.append(ColumnDrift(column="confidence", score=s, threshold=threshold, drifted=s >= threshold))
    labels = sorted(set(reference.class_counts) | set(current.class_counts))
    if sum(reference.class_counts.values()) and sum(current.class_counts.values()):
        s = js_distance([reference.class_counts.get(x, 0) for x in labels], [current.class_counts.get(x, 0) for x in labels])
        out.append(ColumnDrift(column="predicted_class", score=s, threshold=threshold, drifted=s >= threshold))
    return out


# ----- Evidently -----

_EV_LOCK = threading.Lock()
_EV: dict[str, Any] = {}


def load_evidently() -> Any | None:
    """Import Evidently once (it takes seconds); None when it is not installed or fails to import.

    Evidently 0.7 imports ``pandas.core.dtypes.common.infer_dtype_from_object``, which
    pandas 3 removed; where it is missing we provide the old behaviour (dtype → its type)
    before importing.
    """
    with _EV_LOCK:
        if "mod" in _EV:
            return _EV["mod"]
        try:
            import numpy as np
            import pandas.core.dtypes.common as pd_common

            if not hasattr(pd_common, "infer_dtype_from_object"):
                def infer_dtype_from_object(dtype: Any) -> Any:
                    return dtype if isinstance(dtype, type) else np.dtype(dtype).type

                pd_common.infer_dtype_from_object = infer_dtype_from_object  # type: ignore[attr-defined]
            import evidently
            from evidently import DataDefinition, Dataset, Report
            from evidently.metrics import ValueDrift

            _EV["mod"] = {"evidently": evidently, "Report": Report, "Dataset": Dataset,
                          "DataDefinition": DataDefinition, "ValueDrift": ValueDrift}
        except Exception as exc:  # ImportError, or an incompatible install
            log.warning("Evidently unavailable (%s); drift is computed natively", exc)
            _EV["mod"] = None
        return _EV["mod"]


def evidently_installed() -> bool:
    """Whether Evidently can be imported, without importing it (that takes seconds)."""
    import importlib.util

    try:
        return importlib.util.find_spec("evidently") is not None
    except (ImportError, ValueError):
        return False


def evidently_loaded() -> bool:
    """Whether Evidently has been imported already (never blocks)."""
    return _EV.get("mod") is not None


#: how long a deferred warm-up waits for a quiet moment before importing anyway
WARM_MAX_WAIT_S = 300.0
WARM_QUIET_S = 3.0


def wait_for_quiet(quiet: Callable[[], bool], *, quiet_for_s: float, max_wait_s: float, poll_s: float = 0.5,
                   done: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> bool:
    """Poll ``quiet()`` until it has held for ``quiet_for_s`` (True), or ``max_wait_s`` passed
    or ``done()`` (False). A ``quiet`` that raises counts as quiet."""
    deadline = clock() + max_wait_s
    calm_since: float | None = None
    while not done() and clock() < deadline:
        try:
            calm = bool(quiet())
        except Exception:  # a gate that fails must not cost the import
            calm = True
        now = clock()
        calm_since = (now if calm_since is None else calm_since) if calm else None
        if calm_since is not None and now - calm_since >= quiet_for_s:
            return True
        sleep(poll_s)
    return False


def warm_evidently(quiet: Callable[[], bool] | None = None, *, poll_s: float = 0.5,
                   quiet_for_s: float = WARM_QUIET_S, max_wait_s: float = WARM_MAX_WAIT_S) -> None:
    """Import Evidently on a background thread, so the first page that shows drift does not
    wait seconds for it (or time out on a busy host).

    With ``quiet`` (the controller passes "connected to the broker, nothing queued for
    ingest"), the import waits until ``quiet()`` has held for ``quiet_for_s``, at most
    ``max_wait_s``: the import holds the interpreter for seconds, and a controller that
    restarts into a backlog of queued reports should drain it first. A drift report asked
    for meanwhile imports it at once (``load_evidently``)."""
    if "mod" in _EV or not evidently_installed():
        return

    def deferred() -> None:
        if quiet is not None:
            wait_for_quiet(quiet, quiet_for_s=quiet_for_s, max_wait_s=max_wait_s, poll_s=poll_s,
                           done=lambda: "mod" in _EV)
        load_evidently()

    threading.Thread(target=deferred, name="evidently-import", daemon=True).start()


def evidently_snapshot(reference: WindowInfo, current: WindowInfo, config: DriftConfig) -> Any:
    """Run Evidently's ValueDrift (Jensen-Shannon) over the reconstructed samples."""
    ev = load_evidently()
    if ev is None:
        raise DriftUnavailable("Evidently is not installed (pip install 'edgefleet[drift]')")
    ref_df = samples_frame(reference, config.max_rows)
    cur_df = samples_frame(current, config.max_rows)
    cols = [c for c in COLUMNS if c in ref_df.columns and c in cur_df.columns]
    definition = ev["DataDefinition"](
        numerical_columns=[c for c in cols if c == "confidence"],
        categorical_columns=[c for c in cols if c == "predicted_class"],
    )
    report = ev["Report"]([ev["ValueDrift"](column=c, method="jensenshannon", threshold=config.threshold) for c in cols])
    return report.run(
        ev["Dataset"].from_pandas(cur_df[cols], data_definition=definition),
        ev["Dataset"].from_pandas(ref_df[cols], data_definition=definition),
    )


def evidently_columns(snapshot: Any, threshold: float) -> list[ColumnDrift]:
    out = []
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        if not str(cfg.get("type", "")).endswith("ValueDrift"):
            continue
        s = float(m["value"])
        out.append(ColumnDrift(column=cfg["column"], method=cfg.get("method", "jensenshannon"), score=s,
                               threshold=threshold, drifted=s >= threshold))
    return out


# ----- the service -----


def windows_for(
    session: Session, model: str | _HasRef, now: datetime | None = None, *,
    device_ids: Sequence[str] | None = None, config: DriftConfig = DriftConfig(),
) -> tuple[WindowInfo, WindowInfo]:
    name, version = model_label(model)
    now = now or datetime.now(timezone.utc)
    if config.reference_start is not None or config.reference_end is not None:
        oldest = control_periods(session, name, version, start=config.reference_start,
                                 end=config.reference_end or now, device_ids=device_ids)
    else:
        oldest = control_periods(session, name, version, end=now, device_ids=device_ids, limit=config.reference_periods)
    newest = control_periods(session, name, version, end=now, device_ids=device_ids,
                             limit=config.current_periods + len(oldest), newest_first=True)
    reference, current = select_windows(oldest, newest, config)
    return aggregate(reference), aggregate(current)


def drift_score(
    session: Session, model: str | _HasRef, now: datetime | None = None, *,
    device_ids: Sequence[str] | None = None, config: DriftConfig = DriftConfig(),
) -> DriftResult:
    """The drift of ``model`` (``"name:version"`` or anything with ``.name``/``.version``)
    as control, over all devices or ``device_ids``: what the rollout gate ``drift<=X`` reads."""
    name, version = model_label(model)
    now = now or datetime.now(timezone.utc)
    ref, cur = windows_for(session, model, now, device_ids=device_ids, config=config)
    base: dict[str, Any] = {"model": f"{name}:{version}", "threshold": config.threshold, "reference": ref, "current": cur,
            "computed_at": now}
    short = [w for w, label in ((ref, "reference"), (cur, "current")) if w.frames < config.min_frames]
    if short:
        which = " and ".join("reference" if w is ref else "current" for w in short)
        return DriftResult(status="insufficient_data", reason=(
            f"{which} window has fewer than {config.min_frames} frames "
            f"(reference {ref.frames} in {ref.periods} periods, current {cur.frames} in {cur.periods})"), **base)
    engine = config.engine
    columns: list[ColumnDrift] = []
    used: Literal["evidently", "native"] = "native"
    if engine == "auto" and not config.wait_for_evidently and not evidently_loaded():
        warm_evidently()  # this answer is native; later ones use Evidently once it is imported
        engine = "native"
    if engine in ("auto", "evidently") and load_evidently() is not None:
        columns = evidently_columns(evidently_snapshot(ref, cur, config), config.threshold)
        used = "evidently"
    elif engine == "evidently":
        raise DriftUnavailable("Evidently is not installed (pip install 'edgefleet[drift]')")
    else:
        columns = native_columns(ref, cur, config.threshold)
    if not columns:
        return DriftResult(status="insufficient_data", reason="no confidence histogram or class counts to compare", **base)
    score = max(c.score for c in columns)
    return DriftResult(status="ok", score=score, drifted=score >= config.threshold, engine=used, columns=columns, **base)


def drift_report_html(
    session: Session, model: str | _HasRef, now: datetime | None = None, *,
    device_ids: Sequence[str] | None = None, config: DriftConfig = DriftConfig(),
) -> str:
    """Evidently's own HTML report (self-contained, ~4 MB of inline JS) for the two windows.

    Raises:
        DriftUnavailable: Evidently is not installed.
        BadRequest: a window is empty.
    """
    ref, cur = windows_for(session, model, now, device_ids=device_ids, config=config)
    if ref.frames == 0 or cur.frames == 0:
        raise BadRequest("no telemetry in the reference or the current window yet")
    return str(evidently_snapshot(escaped_labels(ref), escaped_labels(cur), config).get_html_str(as_iframe=False))


def escaped_labels(window: WindowInfo) -> WindowInfo:
    """The window with its class names HTML-escaped, for Evidently's HTML report.

    Evidently writes the report's data as ``json.dumps`` inside inline ``<script>`` blocks
    without escaping ``</script>``; a class name is the only string of ours in that data, so
    it goes in escaped (``<`` → ``&lt;`` …; injective, so counts never merge). The report
    shows such a name in its escaped form; ordinary names are unchanged.
    """
    classes: dict[str, int] = {}
    for label, n in window.class_counts.items():
        key = html.escape(label, quote=True)
        classes[key] = classes.get(key, 0) + n
    return window.model_copy(update={"class_counts": classes})
