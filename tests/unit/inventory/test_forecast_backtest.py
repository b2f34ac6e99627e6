"""A few origins of bench/forecast_backtest.py on the public electricity series pmdarima ships: the weekly
model must beat the seasonal-naive forecast there, or the engine would plan worse than "same as last week"."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from common.inventory import demand as dm

BENCH = Path(__file__).resolve().parents[3] / "bench" / "forecast_backtest.py"


@pytest.fixture(scope="module")
def bt() -> ModuleType:
    spec = importlib.util.spec_from_file_location("forecast_backtest", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up while building Score
    spec.loader.exec_module(module)
    return module


def test_the_weekly_model_beats_seasonal_naive_on_daily_electricity_demand(bt: ModuleType) -> None:
    series = bt.taylor_daily()
    assert len(series) == 84 and dm.choose_model(list(series[-60:])) is dm.DemandModel.ETS
    model = bt.backtest(series, "model", step=7)
    naive = bt.backtest(series, "seasonal-naive", step=7)
    assert model.origins == naive.origins == 8
    assert model.wape < naive.wape and model.mase < naive.mase
    assert model.lt_wape < naive.lt_wape  # the lead-time total, which sets the reorder point


def test_intermittent_series_get_tsb_and_it_beats_naive_on_surges(bt: ModuleType) -> None:
    peaks, surges = bt.taylor_peaks(), bt.taylor_surges()
    assert dm.choose_model(list(peaks[-60:])) is dm.choose_model(list(surges[-60:])) is dm.DemandModel.TSB
    tsb = bt.backtest(surges, "model", step=7)
    assert tsb.wape < bt.backtest(surges, "naive", step=7).wape
    assert tsb.wape < bt.backtest(surges, "seasonal-naive", step=7).wape
