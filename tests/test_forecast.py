import csv
from datetime import datetime, timedelta

import numpy as np
import pytest
import torch

from nlp_lstm.checkpoint import Bundle
from nlp_lstm.contract import Job, Monitor
from nlp_lstm.data.series import (
    Scaler,
    Series,
    WindowBatch,
    Windows,
    read_series,
    split_rows,
    window_count,
)
from nlp_lstm.errors import DataError
from nlp_lstm.tasks.forecast import (
    ForecastDataConfig,
    ForecastEnsemble,
    ForecastModelConfig,
    LSTMForecaster,
    build_forecaster,
    fit_linear,
    make_score,
    predict,
    prepare,
    window_split,
)
from nlp_lstm.train.trainer import Trainer, seed_everything
from tests.cli_helpers import last_json, run_cli
from tests.toy_jobs import quiet

START = datetime(2020, 1, 1)


def write_series(path, columns: dict[str, list[float]], step=timedelta(hours=1)):
    names = list(columns)
    rows = len(columns[names[0]])
    lines = ["date," + ",".join(names)]
    for r in range(rows):
        stamp = (START + step * r).isoformat(" ")
        lines.append(stamp + "," + ",".join(repr(columns[n][r]) for n in names))
    path.write_text("\n".join(lines) + "\n")
    return path


def sines(rows: int, seed: int = 0) -> dict[str, list[float]]:
    """Two noiseless sums of sines with different periods and levels."""
    t = np.arange(rows)
    return {
        "a": (3 + np.sin(2 * np.pi * t / 24) + 0.5 * np.sin(2 * np.pi * t / 7)).tolist(),
        "b": (10 + 2 * np.sin(2 * np.pi * t / 12 + 1) + np.cos(2 * np.pi * t / 30)).tolist(),
    }


def counting_series(rows: int, columns: int = 2) -> Series:
    values = np.arange(rows, dtype=np.float64)[:, None] * np.ones(columns) + np.arange(columns)
    return Series("count.csv", [f"c{i}" for i in range(columns)], values, None)


# ---------------------------------------------------------------------------- protocol


def test_ett_hourly_window_counts_follow_the_protocol():
    rows = split_rows("ett_hourly", 17420, 96)
    assert rows == {"train": (0, 8640), "dev": (8544, 11520), "test": (11424, 14400)}
    counts = {name: window_count(span, 96, 96) for name, span in rows.items()}
    assert counts == {"train": 8449, "dev": 2785, "test": 2785}
    # the formula R - L - H + 1, at another look-back and horizon
    rows = split_rows("ett_hourly", 14400, 336)
    assert window_count(rows["test"], 336, 720) == 2880 + 336 - 336 - 720 + 1


def test_ratio_split_is_70_10_20_with_a_full_look_back():
    rows = split_rows("ratio", 1000, 24)
    assert rows == {"train": (0, 700), "dev": (676, 800), "test": (776, 1000)}


def test_windows_never_read_past_their_cut():
    series = counting_series(400)
    windows = Windows(series.values, (100, 300), 24, 12, [0, 1], [0])
    assert len(windows) == 200 - 24 - 12 + 1
    for i in range(len(windows)):
        inputs, targets = windows.window(i)
        assert inputs[:, 0].tolist() == list(range(100 + i, 124 + i))
        assert targets[:, 0].tolist() == list(range(124 + i, 136 + i))
    last_target_row = 100 + len(windows) - 1 + 24 + 12 - 1
    assert last_target_row == 299  # the last window ends exactly at the split's end


def test_scaler_sees_train_rows_only():
    series = counting_series(1000)
    series.values[800:] *= 1000.0  # test rows far off: must not move the statistics
    data = ForecastDataConfig(look_back=24, horizon=12, split="ratio")
    prepared = prepare(series, data, ["c0"], [])
    train = series.values[:700, :1]
    np.testing.assert_allclose(prepared.scaler.mean, train.mean(0))
    np.testing.assert_allclose(prepared.scaler.std, train.std(0))


def test_linear_baseline_equals_a_direct_least_squares_solve():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(60, 2)).cumsum(0)
    windows = Windows(table, (0, 60), 5, 3, [0, 1], [0, 1])
    rows_x, rows_y = [], []
    for i in range(len(windows)):
        for c in range(2):
            rows_x.append([*table[i : i + 5, c], 1.0])
            rows_y.append(table[i + 5 : i + 8, c])
    direct = np.linalg.solve(
        np.array(rows_x).T @ np.array(rows_x), np.array(rows_x).T @ np.array(rows_y)
    )
    np.testing.assert_allclose(fit_linear(windows, 2), direct, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    "head, cell", [("linear", "lstm"), ("segments", "lstm"), ("segments", "gru")]
)
def test_forecast_shape_and_the_future_cannot_leak(head, cell):
    config = ForecastModelConfig(hidden_size=16, segment=4, dropout=0.0, head=head, cell=cell)
    model = LSTMForecaster(config, inputs=3, targets=3, look_back=12, horizon=8).eval()
    inputs = torch.randn(4, 12, 3)
    out = model.predict(inputs)
    assert out.shape == (4, 8, 3)
    # each window's forecast depends on its own inputs only, channels independently
    changed = inputs.clone()
    changed[1, :, 2] += 5.0
    again = model.predict(changed)
    torch.testing.assert_close(again[[0, 2, 3]], out[[0, 2, 3]])
    torch.testing.assert_close(again[1, :, :2], out[1, :, :2])
    assert not torch.allclose(again[1, :, 2], out[1, :, 2])
    # RevIN: shifting a window by a constant shifts its forecast by that constant
    torch.testing.assert_close(model.predict(inputs + 7.0), out + 7.0, atol=1e-4, rtol=1e-4)


def test_ensemble_forecasts_its_members_mean_and_trains_every_member():
    torch.manual_seed(0)
    config = ForecastModelConfig(hidden_size=16, segment=4, dropout=0.0, members=3)
    ensemble = build_forecaster(config, inputs=2, targets=2, look_back=12, horizon=8)
    assert isinstance(ensemble, ForecastEnsemble) and len(ensemble.members) == 3
    single = build_forecaster(
        ForecastModelConfig(hidden_size=16, segment=4, members=1), 2, 2, 12, 8
    )
    assert isinstance(single, LSTMForecaster)  # members=1 keeps the plain model (checkpoints)
    inputs, targets = torch.randn(5, 12, 2), torch.randn(5, 8, 2)
    each = torch.stack([m.predict(inputs) for m in ensemble.members])
    assert not torch.allclose(each[0], each[1])  # own initialisations
    torch.testing.assert_close(ensemble.predict(inputs), each.mean(0))
    # the mean's squared error is at most the members' mean squared error (convexity)
    errors = ((each - targets) ** 2).mean(dim=(1, 2, 3))
    assert ((each.mean(0) - targets) ** 2).mean() <= errors.mean()

    batch = WindowBatch(inputs, targets, torch.arange(5))
    loss, count = ensemble(batch)
    member_losses = [m(batch)[0] for m in ensemble.members]
    torch.testing.assert_close(loss, torch.stack(member_losses).mean())
    assert count == 5 * 8 * 2
    loss.backward()
    for member in ensemble.members:
        assert member.decoder.output.weight.grad.abs().sum() > 0


def test_tiny_model_beats_repeating_the_last_value_on_sines(tmp_path):
    table = np.array(list(sines(700).values())).T
    scaler = Scaler.fit(table[:490])
    scaled = scaler.transform(table)
    rows = split_rows("ratio", 700, 48)
    windows = {n: Windows(scaled, span, 48, 12, [0, 1], [0, 1]) for n, span in rows.items()}
    seed_everything(0)
    model = LSTMForecaster(
        ForecastModelConfig(hidden_size=32, segment=6, dropout=0.0), 2, 2, 48, 12
    )
    job = Job(
        model,
        window_split(windows["train"]),
        window_split(windows["dev"]),
        predict,
        make_score(windows["dev"], fit_linear(windows["train"], 2), 2),
        Monitor("mse", "min"),
        Bundle("forecast", {}),
    )
    config = quiet(max_epochs=15, batch_size=32, lr=3e-3, optimizer="adam")
    best = Trainer(config, tmp_path).fit(job)
    assert best["mse"] < 0.1 * best["mse_repeat"]
    assert best["windows"] == len(windows["dev"]) and best["horizon"] == 12


# ---------------------------------------------------------------------------- CLI


def cli_args(path, *extra):
    return [
        "task=forecast",
        f"data.path={path}",
        "data.look_back=24",
        "data.horizon=6",
        "model.hidden_size=16",
        "model.segment=6",
        "trainer.max_epochs=3",
        "trainer.batch_size=32",
        "trainer.progress_bar=false",
        *extra,
    ]


@pytest.mark.parametrize("members", [1, 2])
def test_cli_train_test_predict_round_trip(tmp_path, members):
    path = write_series(tmp_path / "load.csv", sines(400))
    run = tmp_path / "run"
    trained = run_cli(*cli_args(path, f"model.members={members}"), f"hydra.run.dir={run}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    metrics = last_json(trained.stdout)
    assert {"mse", "mae", "mse_repeat", "mse_linear", "test_mse"} <= set(metrics)
    assert (run / "forecast.png").stat().st_size > 1000
    assert metrics["test_windows"] == (400 - 320 + 24) - 24 - 6 + 1

    tested = run_cli(
        "task=forecast",
        "mode=test",
        f"ckpt={run}/checkpoints/best.pt",
        f"data.path={path}",
        f"hydra.run.dir={tmp_path}/test",
    )
    assert tested.returncode == 0, tested.stderr[-2000:]
    scores = last_json(tested.stdout)
    contract = "mse mae mse_repeat mae_repeat mse_linear mae_linear windows horizon"
    assert set(scores) == set(contract.split())  # the CLI contract, spelled out
    assert scores["mse"] == pytest.approx(metrics["test_mse"], abs=1e-6)
    assert scores["horizon"] == 6 and scores["windows"] == metrics["test_windows"]

    out = tmp_path / "forecast.csv"
    predicted = run_cli(
        "task=forecast",
        "mode=predict",
        f"ckpt={run}/checkpoints/best.pt",
        f"data.path={path}",
        f"output={out}",
        f"hydra.run.dir={tmp_path}/predict",
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    with open(out) as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["date", "a", "b"] and len(rows) == 7
    stamps = [datetime.fromisoformat(r[0]) for r in rows[1:]]
    assert stamps[0] == START + timedelta(hours=400)
    assert all(b - a == timedelta(hours=1) for a, b in zip(stamps, stamps[1:], strict=False))
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert 1.0 < values[:, 0].mean() < 5.0 and 6.0 < values[:, 1].mean() < 14.0  # original units


@pytest.mark.parametrize(
    "edit, line, message",
    [
        (
            lambda lines: lines.__setitem__(5, lines[5].replace(lines[5].split(",")[1], "abc")),
            6,
            "not a number",
        ),
        (lambda lines: lines.__setitem__(7, lines[7].rsplit(",", 1)[0] + ","), 8, "empty cell"),
        (lambda lines: lines.__setitem__(9, lines[3]), 10, "does not come after"),
        (
            lambda lines: lines.__setitem__(4, "2020-13-45 99:00:00," + lines[4].split(",", 1)[1]),
            5,
            "ISO",
        ),
        (lambda lines: lines.__setitem__(6, lines[6] + ",1.0"), 7, "cells"),
    ],
)
def test_bad_series_cells_name_the_file_and_line(tmp_path, edit, line, message):
    path = write_series(tmp_path / "bad.csv", sines(50))
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_series(path)
    assert err.value.line == line and err.value.path == str(path)


def test_cli_bad_inputs_are_one_line_and_leave_no_checkpoint(tmp_path):
    path = write_series(tmp_path / "bad.csv", sines(100))
    lines = path.read_text().splitlines()
    lines[40] = lines[40].replace(lines[40].split(",")[2], "1e")
    path.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    done = run_cli(*cli_args(path), f"hydra.run.dir={run}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {path}:41:")
    assert "Traceback" not in done.stderr and not (run / "checkpoints").exists()

    short = write_series(tmp_path / "short.csv", sines(40))
    done = run_cli(*cli_args(short), f"hydra.run.dir={tmp_path}/short")
    assert done.returncode == 2
    message = done.stderr.strip().splitlines()[-1]
    assert str(short) in message and "shorter than look_back + horizon = 30" in message

    good = write_series(tmp_path / "good.csv", sines(100))
    done = run_cli(*cli_args(good, "model.members=0"), f"hydra.run.dir={tmp_path}/none")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: model.members must be at least 1, got 0"


@pytest.mark.parametrize("rows", [3, 150, 400])
def test_forecast_times_continue_the_tables_interval_however_short_it_is(rows):
    # the usual gap is read from the last 200 rows, or all of a shorter table
    from nlp_lstm.data.series import series_from_table
    from nlp_lstm.tasks.forecast import next_times

    start = datetime(2020, 1, 1)
    times = [str(start + timedelta(hours=2 * i)) for i in range(rows)]
    series = series_from_table({"date": times, "OT": [float(i) for i in range(rows)]})
    last = start + timedelta(hours=2 * (rows - 1))
    assert next_times(series, 3) == [str(last + timedelta(hours=2 * k)) for k in (1, 2, 3)]
