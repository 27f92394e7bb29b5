"""Forecasting numeric series: a look-back window -> (segments) -> LSTM -> all H steps at once.

corpus (CSV series) -> train/validation/test rows (ETT-hourly protocol or 70/10/20) ->
per-column scaler fitted on train rows -> stride-1 windows -> RevIN -> segment projection ->
BiLSTMEncoder (LSTM or GRU, final state) -> linear head or SegRNN segment decoder over the
horizon (``model.members`` such forecasters, their forecasts averaged) -> MSE/MAE on the
scaled values, beside the repeat-last-value and least-squares linear baselines.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from nlp_lstm.config import check_fields, to_dataclass
from nlp_lstm.contract import Job, Predictor, Split
from nlp_lstm.data.series import (
    Scaler,
    Series,
    SplitKind,
    WindowBatch,
    Windows,
    read_series,
    series_from_table,
    split_kind,
    split_rows,
    window_count,
)
from nlp_lstm.errors import ConfigError, DataError
from nlp_lstm.modules.encoder import BiLSTMEncoder, CellKind
from nlp_lstm.modules.series import RevIN, SegmentProjection
from nlp_lstm.tasks.common import (
    check_output_format,
    checkpoint_for,
    eval_batch_size,
    fit,
    json_line,
    load_weights,
    make_bundle,
    make_trainer,
    on_main,
    output_stream,
    predictor_for_run,
    report,
    require_file,
    run_settings,
    task_configs,
    task_monitor,
)
from nlp_lstm.train.plots import plot_forecasts
from nlp_lstm.train.trainer import resolve_device

log = logging.getLogger(__name__)

CORPUS_HINT = (
    "Put ETTh1 at <data.root>/ett/ETTh1.csv (set data.root=DIR or NLP_LSTM_DATA=DIR) or name "
    "any CSV series with data.path=; see data/README.md"
)
# the model, the repeat-last-value baseline and the linear baseline on the same windows
REPORTED = ("mse", "mae", "mse_repeat", "mae_repeat", "mse_linear", "mae_linear", "windows", "horizon")  # fmt: skip


@dataclass
class ForecastDataConfig:
    """The ``data`` group for forecasting."""

    root: str = "data"
    path: str | None = None
    time_column: str | None = "date"  # None: rows are steps without time stamps
    targets: str | list[str] | None = None  # None or "all": every column but the features
    features: list[str] = field(default_factory=list)  # input-only columns (mixed channels)
    look_back: int = 96
    horizon: int = 96
    split: SplitKind = "auto"  # auto: ett_hourly for ETTh* files, else ratio (70/10/20)

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("look_back", "horizon"))


@dataclass
class ForecastModelConfig:
    """The ``model`` group for forecasting. The defaults are the recipe chosen on ETTh1's
    validation rows (README: what was tried)."""

    cell: CellKind = "lstm"
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.5
    channels: Literal["independent", "mixed"] = "independent"  # one series at a time, or all
    segment: int = 24  # look-back steps per input segment (1: one step at a time)
    head: Literal["linear", "segments"] = "segments"  # segments: SegRNN's parallel decoding
    linear_skip: bool = False  # add a linear map from the (normalised) window to the horizon
    revin: bool = True  # reversible instance normalisation
    revin_affine: bool = False
    loss: Literal["mse", "mae", "huber"] = "huber"  # chosen on validation MSE (README)
    huber_delta: float = 1.0
    members: int = 3  # forecasters trained side by side, forecasts averaged (README)

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("hidden_size", "num_layers", "segment", "members"),
                     probabilities=("dropout",))  # fmt: skip
        independent = self.channels == "independent"
        if self.linear_skip and not independent:
            raise ConfigError("linear_skip needs channels=independent")
        if self.head == "segments" and (self.bidirectional or not independent):
            raise ConfigError("head=segments needs bidirectional=false and channels=independent")


SCHEMAS = {"data": ForecastDataConfig, "model": ForecastModelConfig}  # conf/ holds what differs
METRICS = {"mse": "min", "mae": "min"}


# ---------------------------------------------------------------------------- model


class SegmentDecoder(nn.Module):
    """Parallel multi-step decoding (SegRNN, Lin et al. 2023): the horizon is cut into
    segments; each segment's forecast is one recurrent step from the encoder's final state,
    fed a learned position embedding (which segment) and channel embedding (which series),
    then a linear map to the segment's values. All segments run as one batch."""

    def __init__(self, rnn: nn.Module, size: int, horizon: int, segment: int, channels: int):
        super().__init__()
        if horizon % segment:
            raise ConfigError(
                f"data.horizon={horizon} is not a multiple of model.segment={segment}"
            )
        self.rnn = rnn
        self.segments = horizon // segment
        self.channels = channels
        self.position = nn.Parameter(torch.randn(self.segments, size // 2) * 0.02)
        self.channel = nn.Parameter(torch.randn(channels, size - size // 2) * 0.02)
        self.dropout = nn.Dropout(rnn.dropout if rnn.num_layers > 1 else 0.0)
        self.output = nn.Linear(size, segment)

    def forward(self, final, dropout: nn.Module) -> Tensor:
        """``final``: the encoder's hidden state for ``N = B * channels`` series ->
        ``(N, horizon)``."""
        h = final[0] if isinstance(final, tuple) else final
        n = h.shape[1]
        queries = torch.cat(
            [
                self.position.unsqueeze(0).expand(self.channels, -1, -1),
                self.channel.unsqueeze(1).expand(-1, self.segments, -1),
            ],
            dim=-1,
        )  # (channels, segments, size)
        queries = queries.repeat(n // self.channels, 1, 1).reshape(n * self.segments, 1, -1)

        def repeat(state: Tensor) -> Tensor:  # one copy of each series' state per segment
            return state.repeat_interleave(self.segments, dim=1)

        start = tuple(repeat(s) for s in final) if isinstance(final, tuple) else repeat(final)
        out, _ = self.rnn(queries, start)
        return self.output(dropout(out[:, 0])).view(n, -1)


class LSTMForecaster(nn.Module):
    """RevIN -> SegmentProjection -> BiLSTMEncoder (final state) -> linear head (or the
    SegRNN segment decoder), optionally plus a linear map of the window itself
    (``linear_skip``: the RNN then learns what a linear forecast misses).

    ``channels="independent"`` runs every target column through the same network as its
    own univariate series (features are then not allowed); ``"mixed"`` reads all input
    columns at each step and predicts all targets together. ``predict(inputs (B, L, I))
    -> (B, H, K)`` for the first ``K = targets`` input columns. Nothing after the window is
    read: the head sees only the encoder's final state.
    """

    def __init__(
        self, config: ForecastModelConfig, inputs: int, targets: int, look_back: int, horizon: int
    ) -> None:
        super().__init__()
        if look_back % config.segment:
            raise ConfigError(
                f"model.segment={config.segment} must divide data.look_back={look_back}"
            )
        self.independent = config.channels == "independent"
        if self.independent and inputs != targets:
            raise ConfigError(
                "data.features needs model.channels=mixed (independent channels read each "
                "target's own history only)"
            )
        self.targets = targets
        self.horizon = horizon
        self.loss_kind = config.loss
        self.huber_delta = config.huber_delta
        series_channels = 1 if self.independent else inputs
        self.revin = RevIN(inputs, config.revin_affine) if config.revin else None
        self.project = SegmentProjection(config.segment, series_channels, config.hidden_size)
        self.encoder = BiLSTMEncoder(
            config.hidden_size,
            config.hidden_size,
            config.num_layers,
            config.dropout,
            config.cell,
            bidirectional=config.bidirectional,
            pooling="last",
        )
        self.skip = nn.Linear(look_back, horizon) if config.linear_skip else None
        self.decoder: SegmentDecoder | None = None
        if config.head == "segments":
            self.decoder = SegmentDecoder(
                self.encoder.rnn, config.hidden_size, horizon, config.segment, targets
            )
        else:
            self.head = nn.Linear(
                self.encoder.output_size, horizon * (1 if self.independent else targets)
            )

    def predict(self, inputs: Tensor) -> Tensor:
        """Forecasts ``(B, H, targets)`` of the scaled target columns."""
        batch, steps, _ = inputs.shape
        x, stats = self.revin.normalize(inputs) if self.revin is not None else (inputs, None)
        if self.independent:
            x = x.transpose(1, 2).reshape(batch * self.targets, steps, 1)
        segments = self.project(x)
        lengths = torch.full((segments.shape[0],), segments.shape[1])
        encoded = self.encoder(segments, lengths)
        if self.decoder is not None:
            y = self.decoder(encoded.final, self.encoder.dropout)
        else:
            y = self.head(encoded.pooled)
        if self.skip is not None:  # the series' own linear forecast, plus the RNN's part
            y = y + self.skip(x.squeeze(-1))
        if self.independent:
            y = y.view(batch, self.targets, self.horizon).transpose(1, 2)
        else:
            y = y.view(batch, self.horizon, self.targets)
        if stats is not None:
            y = self.revin.denormalize(y, stats, self.targets)
        return y

    def forward(self, batch: WindowBatch) -> tuple[Tensor, int]:
        """Squared, absolute or Huber error summed over every window, step and column, and
        their count."""
        predicted = self.predict(batch.inputs).float()
        if self.loss_kind == "huber":
            loss = F.huber_loss(predicted, batch.targets, reduction="sum", delta=self.huber_delta)
        elif self.loss_kind == "mae":
            loss = F.l1_loss(predicted, batch.targets, reduction="sum")
        else:
            loss = F.mse_loss(predicted, batch.targets, reduction="sum")
        return loss, predicted.numel()


class ForecastEnsemble(nn.Module):
    """Several :class:`LSTMForecaster` s trained side by side on the same batches, each
    from its own initialisation and on its own loss; the forecast is their mean. The mean
    forecast's squared error is never above the members' average error, and is below it
    by the part of the error in which the members differ (convexity)."""

    def __init__(self, members: list[LSTMForecaster]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def predict(self, inputs: Tensor) -> Tensor:
        """The members' mean forecast ``(B, H, targets)``."""
        return torch.stack([member.predict(inputs) for member in self.members]).mean(0)

    def forward(self, batch: WindowBatch) -> tuple[Tensor, int]:
        """The members' losses averaged (each summed over its values), and the count."""
        losses = [member(batch) for member in self.members]
        return sum(loss for loss, _ in losses) / len(losses), losses[0][1]


ForecastModel = LSTMForecaster | ForecastEnsemble


def build_forecaster(
    config: ForecastModelConfig, inputs: int, targets: int, look_back: int, horizon: int
) -> ForecastModel:
    """One forecaster, or ``model.members`` of them as a :class:`ForecastEnsemble`."""
    members = [
        LSTMForecaster(config, inputs, targets, look_back, horizon) for _ in range(config.members)
    ]
    return members[0] if len(members) == 1 else ForecastEnsemble(members)


def predict(model: ForecastModel, batch: WindowBatch) -> list[Tensor]:
    """The forecast ``(H, targets)`` of each window of the batch."""
    return list(model.predict(batch.inputs).float().cpu().unbind(0))


# ---------------------------------------------------------------------------- baselines, scores


def window_arrays(windows: Windows, positions: list[int], targets: int) -> tuple[Tensor, Tensor]:
    """Histories ``(n, L, targets)`` and truths ``(n, H, targets)`` of the given windows."""
    pairs = [windows.window(i) for i in positions]
    history = torch.stack([x[:, :targets] for x, _ in pairs]).double()
    return history, torch.stack([y for _, y in pairs]).double()


def fit_linear(windows: Windows, targets: int) -> np.ndarray:
    """Least-squares map ``(L + 1, H)`` from a column's L past values (and a bias) to its
    next H values, one map shared by all target columns, fitted on these windows."""
    history, truth = window_arrays(windows, list(range(len(windows))), targets)
    x = history.transpose(1, 2).reshape(-1, windows.look_back).numpy()
    y = truth.transpose(1, 2).reshape(-1, windows.horizon).numpy()
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(x, y, rcond=None)
    return solution


def linear_forecast(history: Tensor, linear: np.ndarray) -> Tensor:
    """The linear baseline's ``(n, H, targets)`` for histories ``(n, L, targets)``."""
    weights = torch.as_tensor(linear, dtype=torch.float64)
    return (history.transpose(1, 2) @ weights[:-1] + weights[-1]).transpose(1, 2)


def make_score(windows: Windows, linear: np.ndarray, targets: int):
    """``score(outputs, split)``: MSE and MAE over every window, step and target column of
    the model, the repeat-last-value baseline and the linear baseline."""

    def score(outputs: list[Tensor], split: Split) -> dict:
        history, truth = window_arrays(windows, list(split.examples), targets)
        predicted = torch.stack(outputs).double()
        repeat = history[:, -1:, :].expand_as(truth)
        scores = {}
        for name, forecast in (
            ("", predicted),
            ("_repeat", repeat),
            ("_linear", linear_forecast(history, linear)),
        ):
            error = forecast - truth
            scores[f"mse{name}"] = round(float((error**2).mean()), 6)
            scores[f"mae{name}"] = round(float(error.abs().mean()), 6)
        return {**scores, "windows": len(split), "horizon": windows.horizon}

    return score


def window_split(windows: Windows) -> Split:
    """A split's windows for the Trainer (examples: window positions; all of length L)."""
    return Split(range(len(windows)), [windows.look_back] * len(windows), windows)


# ---------------------------------------------------------------------------- data


@dataclass
class Prepared:
    """A series file cut into scaled splits as a run (or a checkpoint) defines them."""

    series: Series
    targets: list[str]
    features: list[str]
    scaler: Scaler
    windows: dict[str, Windows]
    linear: np.ndarray


def choose_columns(series: Series, data: ForecastDataConfig) -> tuple[list[str], list[str]]:
    """Target and feature column names, checked against the file's header."""
    features = list(data.features)
    if data.targets in (None, "all"):
        targets = [c for c in series.columns if c not in features]
    else:
        targets = [data.targets] if isinstance(data.targets, str) else list(data.targets)
    for name in [*targets, *features]:
        if name not in series.columns:
            raise DataError(
                series.path,
                1,
                f"no column {name!r} (columns: {', '.join(series.columns)}; "
                "set data.targets / data.features)",
            )
    if not targets or set(targets) & set(features):
        raise ConfigError("data.targets must name at least one column, none of them a feature")
    return targets, features


def prepare(
    series: Series,
    data: ForecastDataConfig,
    targets: list[str],
    features: list[str],
    scaler: Scaler | None = None,
) -> Prepared:
    """Split by rows, scale (fitting the scaler on train rows unless one is given), cut
    windows, and fit the linear baseline on the train windows."""
    kind = split_kind(data.split, series.path)
    rows = split_rows(kind, len(series), data.look_back)
    for name, (start, end) in rows.items():
        if window_count((start, end), data.look_back, data.horizon) < 1:
            raise DataError(
                series.path,
                None,
                f"the {name} split (rows {start}-{end} of {len(series)}, data.split={kind}) is "
                f"shorter than look_back + horizon = {data.look_back + data.horizon}",
            )
    used = series.index([*targets, *features])
    table = series.values[:, used]
    if scaler is None:
        scaler = Scaler.fit(table[rows["train"][0] : rows["train"][1]])
    scaled = scaler.transform(table)
    inputs = list(range(len(used)))
    windows = {
        name: Windows(scaled, span, data.look_back, data.horizon, inputs, inputs[: len(targets)])
        for name, span in rows.items()
    }
    log.info(
        "%s: %d rows, split %s: %s windows (L=%d, H=%d); targets %s%s",
        series.path,
        len(series),
        kind,
        ", ".join(f"{name} {len(w)}" for name, w in windows.items()),
        data.look_back,
        data.horizon,
        targets,
        f", features {features}" if features else "",
    )
    linear = fit_linear(windows["train"], len(targets))
    return Prepared(series, targets, features, scaler, windows, linear)


def read_prepared(data: ForecastDataConfig) -> Prepared:
    path = require_file(data.path, "series file (data.path)", CORPUS_HINT)
    series = read_series(path, data.time_column)
    targets, features = choose_columns(series, data)
    return prepare(series, data, targets, features)


# ---------------------------------------------------------------------------- training


def setup(cfg: DictConfig, run_dir: Path | None):
    """Read and split the series, fit the scaler and baselines, build the model: the Job."""
    data, model_cfg, _, trainer = task_configs(
        cfg, run_dir, ForecastDataConfig, ForecastModelConfig
    )
    monitor = task_monitor(cfg, METRICS)
    prepared = read_prepared(data)
    targets = len(prepared.targets)
    model = build_forecaster(
        model_cfg, targets + len(prepared.features), targets, data.look_back, data.horizon
    )
    job = Job(
        model=model,
        train=window_split(prepared.windows["train"]),
        dev=window_split(prepared.windows["dev"]),
        predict=predict,
        score=make_score(prepared.windows["dev"], prepared.linear, targets),
        monitor=monitor,
        bundle=make_bundle(
            cfg,
            {},
            columns=prepared.series.columns,
            targets=prepared.targets,
            features=prepared.features,
            scaler=prepared.scaler.to_plain(),
        ),
    )
    return job, trainer, prepared


def train(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=train``: fit on the train rows, select on validation MSE, then score the
    test rows with the best model (reported beside the validation figures, as the field
    does). The run folder adds ``forecast.png`` of a few validation windows."""
    job, trainer, prepared = setup(cfg, run_dir)
    best = fit(job, trainer)
    test_windows = prepared.windows["test"]
    test = trainer.evaluate(
        job.model,
        window_split(test_windows),
        predict,
        make_score(test_windows, prepared.linear, len(prepared.targets)),
    )
    log.info("test (best validation epoch): %s", {k: test[k] for k in REPORTED})
    on_main(draw_forecasts, job.model, prepared.windows["dev"], prepared,
            run_dir / "forecast.png", "validation", trainer)  # fmt: skip
    report(
        {**{k: best[k] for k in REPORTED}, **{f"test_{k}": test[k] for k in REPORTED}},
        run_dir / "metrics.json",
    )


def draw_forecasts(
    model, windows: Windows, prepared: Prepared, path: Path, title: str, trainer
) -> None:
    """``forecast.png``: history, truth and forecast (original units) of a few windows."""
    count = len(windows)
    positions = sorted({0, count // 3, 2 * count // 3, count - 1})
    columns = list(range(min(3, len(prepared.targets))))
    with trainer.inference(model):
        forecast = model.predict(windows(positions).inputs.to(trainer.device)).float().cpu()
    panels = []
    for row, i in enumerate(positions):
        history, truth = windows.window(i)
        for c in columns:
            unscale = lambda v, c=c: prepared.scaler.inverse(v.numpy(), [c])  # noqa: E731
            panels.append(
                {
                    "title": f"{title} window {i}, {prepared.targets[c]}",
                    "history": unscale(history[:, c]),
                    "truth": unscale(truth[:, c]),
                    "forecast": unscale(forecast[row, :, c]),
                }
            )
    try:
        plot_forecasts(panels, path, cols=len(columns))
    except Exception as err:  # a plot must never fail a run
        log.warning("could not draw %s: %s", path.name, err)


# ---------------------------------------------------------------------------- inference


@dataclass(frozen=True)
class Forecast:
    """The ``horizon`` steps after the end of a series: their time stamps (step numbers
    without a time column), the target columns and the values ``(horizon, targets)`` in
    the series' own units."""

    times: tuple[str, ...]
    columns: tuple[str, ...]
    values: np.ndarray


class Forecaster(Predictor):
    """The forecasting predictor: ``forecaster("recent.csv")`` (or a pandas DataFrame, or a
    dict of columns) -> :class:`Forecast` of the steps after the table's last row, read from
    its last ``look_back`` rows; a list of tables -> a list, forecast as one batch. The
    table needs the columns the model was trained on (others are ignored)."""

    task = "forecast"
    input_kind = "a CSV path, a pandas DataFrame or a dict of columns"

    def __init__(self, model: ForecastModel, bundle, device, batch_size=256, precision="32"):
        super().__init__(model, bundle, device, batch_size, precision)
        self.data = to_dataclass(ForecastDataConfig, bundle.config["data"], "data")
        extras = bundle.extras
        self.targets, self.features = list(extras["targets"]), list(extras["features"])
        self.scaler = Scaler.from_plain(extras["scaler"])

    @property
    def horizon(self) -> int:
        return self.data.horizon

    def is_single(self, inputs) -> bool:
        return not isinstance(inputs, (list, tuple))

    def check_input(self, item, position: int) -> None:
        if item is None or not isinstance(item, (str, Path, dict)) and not hasattr(item, "columns"):
            raise TypeError(f"input {position}: expected {self.input_kind}, got {type(item).__name__}")  # fmt: skip

    def forecast(self, table):
        """The forecast of one table (or a list of tables: a list of forecasts)."""
        return self(table)

    def series(self, table) -> Series:
        """The table as a checked :class:`Series` holding the trained columns."""
        if isinstance(table, (str, Path)):
            path = require_file(str(table), "series file", CORPUS_HINT)
            series = read_series(path, self.data.time_column)
        else:
            series = series_from_table(table, self.data.time_column)
        missing = [c for c in [*self.targets, *self.features] if c not in series.columns]
        if missing:
            raise DataError(series.path, 1, f"no column {missing[0]!r}, which the model was trained on")  # fmt: skip
        if len(series) < self.data.look_back:
            raise DataError(series.path, None, f"needs at least data.look_back={self.data.look_back} rows")  # fmt: skip
        return series

    def run(self, tables: list) -> list[Forecast]:
        series = [self.series(table) for table in tables]
        windows = np.stack([
            self.scaler.transform(s.values[-self.data.look_back :, s.index([*self.targets, *self.features])])
            for s in series
        ])  # fmt: skip
        inputs = torch.as_tensor(windows, dtype=torch.float32)
        scaled = []
        for start in range(0, len(series), self.batch_size):
            with self.inference():
                batch = inputs[start : start + self.batch_size].to(self.device)
                scaled.append(self.model.predict(batch).float().cpu())
        values = torch.cat(scaled).numpy()
        columns = list(range(len(self.targets)))
        return [
            Forecast(
                tuple(next_times(s, self.horizon)),
                tuple(self.targets),
                self.scaler.inverse(v, columns),
            )  # fmt: skip
            for s, v in zip(series, values, strict=True)
        ]


def load(
    checkpoint, device="auto", batch_size: int | None = None, precision: str = "32"
) -> Forecaster:
    """The :class:`Forecaster` predictor of a checkpoint (no data file needed)."""
    bundle = checkpoint.bundle
    data = to_dataclass(ForecastDataConfig, bundle.config["data"], "data")
    model_cfg = to_dataclass(ForecastModelConfig, bundle.config["model"], "model")
    targets, features = bundle.extras["targets"], bundle.extras["features"]
    model = build_forecaster(model_cfg, len(targets) + len(features), len(targets),
                             data.look_back, data.horizon)  # fmt: skip
    load_weights(model, checkpoint)
    return Forecaster(model, bundle, resolve_device(device), batch_size or eval_batch_size(bundle), precision)  # fmt: skip


def test(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=test ckpt=PATH data.path=FILE``: MSE/MAE of the test split of FILE (scaled
    with the checkpoint's scaler) beside the repeat and linear baselines."""
    trainer = make_trainer(cfg, None)
    checkpoint = checkpoint_for(cfg, "forecast")
    forecaster = load(checkpoint, trainer.device)
    data = run_settings(checkpoint.bundle, cfg, ForecastDataConfig)
    series = forecaster.series(require_file(data.path, "series file (data.path)", CORPUS_HINT))
    prepared = prepare(series, data, forecaster.targets, forecaster.features, forecaster.scaler)
    windows = prepared.windows["test"]
    model = forecaster.model
    scores = trainer.evaluate(model, window_split(windows), predict,
                              make_score(windows, prepared.linear, len(forecaster.targets)))  # fmt: skip
    on_main(draw_forecasts, model, windows, prepared, run_dir / "forecast.png", "test", trainer)
    report({k: scores[k] for k in REPORTED}, run_dir / "test_metrics.json")


def next_times(series: Series, steps: int) -> list[str]:
    """Time stamps of the ``steps`` rows after the file's end, at its usual interval (the
    most common gap between rows); step numbers without a time column."""
    if series.times is None:
        return [str(len(series) + i) for i in range(steps)]
    if len(series.times) < 2:
        raise DataError(series.path, None, "needs two time stamps to continue them")
    recent = series.times[-200:]
    gaps = Counter(b - a for a, b in zip(recent, recent[1:], strict=False))
    gap = gaps.most_common(1)[0][0]
    return [(series.times[-1] + gap * (i + 1)).isoformat(" ") for i in range(steps)]


def predict_mode(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=predict ckpt=PATH data.path=FILE output=FILE``: forecast the H steps after
    the end of FILE, as CSV in original units with the time stamps continued
    (``output_format=jsonl``: the :class:`Forecast` as one JSON line)."""
    output_format = check_output_format(cfg)
    forecaster = predictor_for_run(cfg, "forecast")
    data = run_settings(forecaster.bundle, cfg, ForecastDataConfig)
    result = forecaster.forecast(require_file(data.path, "series file (data.path)", CORPUS_HINT))
    with output_stream(cfg) as out:
        if output_format == "jsonl":
            out.write(json_line(result))
        else:
            out.write(",".join([forecaster.data.time_column or "step", *result.columns]) + "\n")
            for stamp, row in zip(result.times, result.values, strict=True):
                out.write(",".join([stamp, *(f"{v:.6g}" for v in row)]) + "\n")
    log.info("forecast %d steps of %s after %s", len(result.times), forecaster.targets, data.path)


MODES = {"train": train, "test": test, "predict": predict_mode}
