"""Style factors (momentum, value, size) against slow per-symbol / per-date loops, and the style registry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factor_engine import styles, xsection
from factor_engine.styles.momentum import trailing_weighted_growth
from factor_engine.synthetic import generate_market

FrameMatcher = Callable[..., None]
KEYS = ["date", "symbol"]
START = dt.date(2023, 1, 2)
NAN = float("nan")
MOMENTUM_PARAMS = {"trailing_days": 20, "half_life": 7, "lag": 3}


# --------------------------------------------------------------------------------------------------------------
# per-date references


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def reference_winsorize(values: np.ndarray, percentile: float) -> np.ndarray:
    finite_values = _finite(values)
    if finite_values.size == 0:
        return values.copy()
    return np.clip(values, np.quantile(finite_values, percentile), np.quantile(finite_values, 1.0 - percentile))


def reference_standardize(values: np.ndarray) -> np.ndarray:
    finite_values = _finite(values)
    if finite_values.size < 2:
        return np.full(values.shape, NAN)
    return (values - finite_values.mean()) / finite_values.std(ddof=1)


def _by_date(frame: pl.DataFrame, columns: list[str]) -> Iterator[tuple[dt.date, pl.Series, list[np.ndarray]]]:
    """Each date's symbols and the given columns as float arrays (null as NaN)."""
    for (date,), day in frame.sort(KEYS).partition_by("date", as_dict=True, maintain_order=True).items():
        yield date, day["symbol"], [day[c].cast(pl.Float64).fill_null(NAN).to_numpy() for c in columns]


def _scores(parts: list[tuple[dt.date, pl.Series, np.ndarray]], name: str) -> pl.DataFrame:
    return pl.concat(
        pl.DataFrame({"date": [date] * symbols.len(), "symbol": symbols, name: values})
        for date, symbols, values in parts
    )


def reference_growth(returns: np.ndarray, window: int, half_life: float, lag: int) -> np.ndarray:
    """prod_j(1 + w_j r_j) − 1 over the ``window`` returns ending ``lag`` rows before each row of one
    symbol's history; w_j = 0.5 ** ((window − 1 − j) / half_life) (oldest first, newest weight 1)."""
    weights = 0.5 ** ((window - 1 - np.arange(window)) / half_life)
    out = np.full(returns.shape[0], NAN)
    for position in range(lag + window - 1, returns.shape[0]):
        chunk = returns[position - lag - window + 1 : position - lag + 1]
        if np.isfinite(chunk).all():
            out[position] = np.prod(1.0 + weights * chunk) - 1.0
    return out


def reference_momentum(
    panel: pl.DataFrame, trailing_days: int, half_life: float, lag: int, winsor_factor: float | None
) -> pl.DataFrame:
    growth_parts = []
    for history in panel.partition_by("symbol"):
        history = history.sort("date")
        returns = history["asset_returns"].cast(pl.Float64).fill_null(NAN).to_numpy()
        growth_parts.append(
            history.select("date", "symbol").with_columns(
                pl.Series("growth", reference_growth(returns, trailing_days, half_life, lag))
            )
        )
    growth = pl.concat(growth_parts)
    parts = []
    for date, symbols, (values,) in _by_date(growth, ["growth"]):
        if winsor_factor is not None:
            values = reference_winsorize(values, winsor_factor)
        parts.append((date, symbols, reference_standardize(values)))
    return _scores(parts, "mom_score")


def reference_value(panel: pl.DataFrame, winsorize_features: float | None) -> pl.DataFrame:
    """Per-date loop; a null feature is skipped in the average, a NaN one makes the score missing."""
    parts = []
    features_names = ["book_price", "sales_price", "cf_price"]
    null_masks = {
        date: nulls
        for date, _, nulls in _by_date(
            panel.select("date", "symbol", *(pl.col(c).is_null().cast(pl.Float64) for c in features_names)),
            features_names,
        )
    }
    for date, symbols, features in _by_date(panel, features_names):
        standardized, poisoned = [], np.zeros(symbols.len(), dtype=bool)
        for position, feature in enumerate(features):
            if winsorize_features is not None:
                feature = reference_winsorize(feature, winsorize_features)
            if position < 2:
                feature = np.log(feature)
            poisoned |= ~np.isfinite(feature) & (null_masks[date][position] == 0.0)
            standardized.append(reference_standardize(feature))
        stacked = np.vstack(standardized)
        present = np.isfinite(stacked)
        average = np.array(
            [stacked[present[:, i], i].mean() if present[:, i].any() else NAN for i in range(stacked.shape[1])]
        )
        average[poisoned] = NAN
        parts.append((date, symbols, reference_standardize(average)))
    return _scores(parts, "val_score")


def polars_quantile(values: np.ndarray, q: float) -> float:
    result = pl.Series(values[~np.isnan(values)], dtype=pl.Float64).quantile(q)
    return NAN if result is None else float(result)


def reference_size(panel: pl.DataFrame, lower_decile: float, upper_decile: float) -> pl.DataFrame:
    parts = []
    for date, symbols, (caps,) in _by_date(panel, ["market_cap"]):
        scores = reference_standardize(-np.log(caps))
        low, high = polars_quantile(scores, lower_decile), polars_quantile(scores, upper_decile)
        parts.append((date, symbols, np.where((scores <= low) | (scores >= high), scores, 0.0)))
    return _scores(parts, "sze_score")


# --------------------------------------------------------------------------------------------------------------
# inputs


@pytest.fixture(scope="module")
def returns_panel() -> pl.DataFrame:
    """Unbalanced returns: late listings, early delistings, rows missing inside lives (skipped, not gaps),
    a null first return per symbol, one null return mid-history (symbol R03) and returns of 10–60 % in
    magnitude that take the kernel's exact path."""
    rng = np.random.default_rng(2024)
    n_symbols, n_dates = 25, 90
    rows = []
    for s in range(n_symbols):
        first = int(rng.integers(0, 25)) if s % 3 == 0 else 0
        last = int(rng.integers(60, n_dates)) if s % 4 == 1 else n_dates
        alive = [d for d in range(first, last) if d < first + 2 or rng.random() > 0.05]
        returns = rng.normal(0.0005, 0.02, len(alive))
        large = rng.random(len(alive)) < 0.03
        returns[large] = rng.choice([-1.0, 1.0], large.sum()) * rng.uniform(0.1, 0.6, large.sum())
        for position, (d, r) in enumerate(zip(alive, returns, strict=True)):
            missing = position == 0 or (s == 3 and position == 40)
            rows.append((START + dt.timedelta(days=d), f"R{s:02d}", None if missing else float(r)))
    return pl.DataFrame(rows, schema={"date": pl.Date, "symbol": pl.String, "asset_returns": pl.Float64}, orient="row")


@pytest.fixture(scope="module")
def market_panel() -> pl.DataFrame:
    """A synthetic panel with value features, one null book_price, one NaN cf_price and one null sales_price."""
    panel = generate_market(80, 40, seed=3).panel
    dates = panel["date"].unique().sort()
    symbols = panel.filter(pl.col("date") == dates[10])["symbol"]

    def plant(column: str, date: dt.date, symbol: str, value: float | None) -> pl.Expr:
        at = (pl.col("date") == date) & (pl.col("symbol") == symbol)
        return pl.when(at).then(pl.lit(value, dtype=pl.Float64)).otherwise(pl.col(column)).alias(column)

    return panel.with_columns(
        plant("book_price", dates[10], symbols[0], None),
        plant("cf_price", dates[10], symbols[1], NAN),
        plant("sales_price", dates[12], symbols[2], None),
    )


# --------------------------------------------------------------------------------------------------------------
# momentum


def test_returns_panel_exercises_the_hard_cases(returns_panel: pl.DataFrame) -> None:
    per_symbol = returns_panel.group_by("symbol").agg(pl.col("date").min().alias("first"), pl.len().alias("n"))
    assert per_symbol["first"].n_unique() > 3  # late listings
    assert per_symbol["n"].n_unique() > 5  # unequal histories (delistings, missing rows)
    assert (returns_panel["asset_returns"].abs() >= 0.1).sum() > 20
    assert returns_panel["asset_returns"].null_count() == 26


@pytest.mark.parametrize("winsor_factor", [0.05, None])
def test_momentum_matches_per_symbol_loop(
    returns_panel: pl.DataFrame, winsor_factor: float | None, frames_match: FrameMatcher
) -> None:
    ours = styles.momentum(returns_panel, **MOMENTUM_PARAMS, winsor_factor=winsor_factor)
    expected = reference_momentum(returns_panel, **MOMENTUM_PARAMS, winsor_factor=winsor_factor)
    assert ours.columns == ["date", "symbol", "mom_score"]
    assert ours.height == returns_panel.height
    frames_match(ours, expected, KEYS, ["mom_score"], atol=1e-11)
    assert ours["mom_score"].drop_nulls().len() > 1000


def test_momentum_null_return_blanks_exactly_the_windows_holding_it(returns_panel: pl.DataFrame) -> None:
    history = styles.momentum(returns_panel, **MOMENTUM_PARAMS).filter(pl.col("symbol") == "R03").sort("date")
    missing = history["mom_score"].is_null().to_numpy()
    window, lag = MOMENTUM_PARAMS["trailing_days"], MOMENTUM_PARAMS["lag"]
    # first return (row 0) is null: rows < window + lag have no score; the null at row 40 blanks rows
    # 40 + lag .. 40 + lag + window − 1
    expected = np.zeros(history.height, dtype=bool)
    expected[: window + lag] = True
    expected[40 + lag : 40 + lag + window] = True
    np.testing.assert_array_equal(missing, expected)


def test_momentum_lazy_and_shuffled_input_give_the_same_scores(
    returns_panel: pl.DataFrame, frames_match: FrameMatcher
) -> None:
    eager = styles.momentum(returns_panel, **MOMENTUM_PARAMS)
    lazy = styles.momentum(returns_panel.lazy(), **MOMENTUM_PARAMS)
    shuffled = styles.momentum(returns_panel.sample(fraction=1.0, shuffle=True, seed=5), **MOMENTUM_PARAMS)
    assert lazy.equals(eager)
    frames_match(shuffled, eager, KEYS, ["mom_score"], atol=0.0)


def test_momentum_window_longer_than_any_history_is_all_null(returns_panel: pl.DataFrame) -> None:
    """Found by schemathesis: a window of 10⁸ observations (with a return above the series limit) hung;
    no symbol has that much history, so every score is null at once."""
    spiked = returns_panel.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(6.7e16).otherwise(pl.col("asset_returns")).alias("asset_returns")
    )
    scores = styles.momentum(spiked, trailing_days=100_000_000, half_life=1e300, lag=0)
    assert scores.height == spiked.height and scores["mom_score"].null_count() == scores.height


def test_momentum_output_row_order_is_as_documented(returns_panel: pl.DataFrame) -> None:
    """Documented: date-sorted input keeps its row order; other input comes back sorted by (date, symbol)."""
    by_date_symbols_descending = returns_panel.sort(["date", "symbol"], descending=[False, True])
    ours = styles.momentum(by_date_symbols_descending, **MOMENTUM_PARAMS)
    assert ours.select(KEYS).equals(by_date_symbols_descending.select(KEYS))
    shuffled = styles.momentum(returns_panel.sample(fraction=1.0, shuffle=True, seed=3), **MOMENTUM_PARAMS)
    assert shuffled.select(KEYS).equals(shuffled.select(KEYS).sort(KEYS))


def _segments(
    seed: int, n_segments: int, window: int, lag: int, nan_rate: float = 0.03
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Concatenated symbol histories (with NaN and 10–90 % returns), their first-row flags and the pieces."""
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(n_segments):
        length = int(rng.integers(1, 3 * (window + lag) + 5))
        values = rng.normal(0.0, 0.03, length)
        large = rng.random(length) < 0.08
        values[large] = rng.uniform(-0.6, 0.9, large.sum())
        values[rng.random(length) < nan_rate] = NAN
        pieces.append(values)
    flags = np.concatenate([np.arange(p.shape[0]) == 0 for p in pieces])
    return np.concatenate(pieces), flags, pieces


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_segments=st.integers(1, 8),
    window=st.integers(1, 40),
    lag=st.integers(0, 6),
    half_life=st.floats(0.5, 300.0),
)
def test_trailing_weighted_growth_matches_loop(
    seed: int, n_segments: int, window: int, lag: int, half_life: float
) -> None:
    returns, flags, pieces = _segments(seed, n_segments, window, lag)
    ours = trailing_weighted_growth(returns, flags, window, half_life, lag)
    expected = np.concatenate([reference_growth(p, window, half_life, lag) for p in pieces])
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(ours, expected, rtol=1e-13, atol=1e-13)


def test_trailing_weighted_growth_long_series_split_across_workers() -> None:
    """Many symbols (split at symbol boundaries across threads), the default window and half-life."""
    returns, flags, pieces = _segments(99, 40, 252, 20, nan_rate=0.0005)
    ours = trailing_weighted_growth(returns, flags, 252, 126, 20)
    expected = np.concatenate([reference_growth(p, 252, 126, 20) for p in pieces])
    assert np.isfinite(expected).sum() > 1000
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(ours, expected, rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------------------------------------------
# value and size


@pytest.mark.parametrize("winsorize_features", [None, 0.1])
def test_value_matches_per_date_loop(
    market_panel: pl.DataFrame, winsorize_features: float | None, frames_match: FrameMatcher
) -> None:
    ours = styles.value(market_panel, winsorize_features=winsorize_features)
    expected = reference_value(market_panel, winsorize_features)
    assert ours.columns == ["date", "symbol", "val_score"]
    frames_match(ours, expected, KEYS, ["val_score"], atol=1e-12)
    assert ours["val_score"].null_count() == 1  # a null feature is skipped, the NaN cf_price is not


@pytest.mark.parametrize(("lower_decile", "upper_decile"), [(0.2, 0.8), (0.1, 0.5), (0.0, 1.0)])
def test_size_matches_per_date_loop(
    market_panel: pl.DataFrame, lower_decile: float, upper_decile: float, frames_match: FrameMatcher
) -> None:
    ours = styles.size(market_panel.lazy(), lower_decile=lower_decile, upper_decile=upper_decile)
    expected = reference_size(market_panel, lower_decile, upper_decile)
    frames_match(ours, expected, KEYS, ["sze_score"], atol=1e-12)
    if (lower_decile, upper_decile) == (0.2, 0.8):
        zero_share = (ours["sze_score"] == 0.0).mean()
        assert 0.5 < zero_share < 0.65


def test_size_of_a_missing_cap_is_missing(market_panel: pl.DataFrame, frames_match: FrameMatcher) -> None:
    """A null cap gives a null score (toraniko's between-test is null there), and the date's other scores are
    those of the date without that row: it enters neither the standardization nor the quantiles."""
    dates = market_panel["date"].unique().sort()
    nulled = (pl.col("date").is_in(dates.gather([3, 4, 10]).implode())) & (pl.col("symbol").rank("dense") % 7 == 0)
    panel = market_panel.with_columns(pl.when(nulled).then(None).otherwise(pl.col("market_cap")).alias("market_cap"))
    n_missing = panel["market_cap"].null_count()
    assert n_missing > 0
    ours = styles.size(panel)
    assert ours["sze_score"].null_count() == n_missing
    assert (
        ours.filter(pl.col("sze_score").is_null())
        .select(KEYS)
        .equals(panel.filter(pl.col("market_cap").is_null()).select(KEYS).sort(KEYS))
    )
    expected = reference_size(panel.filter(pl.col("market_cap").is_not_null()), 0.2, 0.8)
    frames_match(ours.drop_nulls("sze_score"), expected, KEYS, ["sze_score"], atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# registry


def liquidity(df: pl.DataFrame | pl.LazyFrame, *, window: int = 3) -> pl.LazyFrame:
    """Test liquidity: standardized log of the trailing mean turnover (volume / market cap)."""
    turnover = pl.col("volume") / pl.col("market_cap")
    return (
        df.lazy()
        .sort("date")
        .with_columns(turnover.rolling_mean(window).over("symbol").log().alias("liq_score"))
        .with_columns(xsection.winsorize_xsection("liq_score", percentile=0.05))
        .select("date", "symbol", xsection.center_xsection("liq_score", standardize=True))
    )


def reference_liquidity(panel: pl.DataFrame, window: int) -> pl.DataFrame:
    parts = []
    for (symbol,), history in panel.partition_by("symbol", as_dict=True).items():
        history = history.sort("date")
        turnover = (history["volume"] / history["market_cap"]).to_numpy()
        trailing = np.full(turnover.shape[0], NAN)
        for end in range(window - 1, turnover.shape[0]):
            trailing[end] = np.log(turnover[end - window + 1 : end + 1].mean())
        parts.append(pl.DataFrame({"date": history["date"], "symbol": symbol, "raw": trailing}))
    raw = pl.concat(parts)
    scores = [
        (date, symbols, reference_standardize(reference_winsorize(values, 0.05)))
        for date, symbols, (values,) in _by_date(raw, ["raw"])
    ]
    return _scores(scores, "liq_score")


@pytest.fixture
def liquidity_style() -> Iterator[styles.StyleFactor]:
    styles.register_style(
        "liquidity_test",
        liquidity,
        score="liq_score",
        inputs=("date", "symbol", "volume", "market_cap"),
        defaults={"window": 3},
    )
    try:
        yield styles.get_style("liquidity_test")
    finally:
        styles.unregister_style("liquidity_test")


@pytest.fixture(scope="module")
def panel_with_volume(market_panel: pl.DataFrame) -> pl.DataFrame:
    rng = np.random.default_rng(8)
    return market_panel.with_columns(
        (pl.col("market_cap") * pl.Series(rng.uniform(0.001, 0.02, market_panel.height))).alias("volume")
    )


def test_registered_custom_style_is_computed_and_joined(
    liquidity_style: styles.StyleFactor, panel_with_volume: pl.DataFrame, frames_match: FrameMatcher
) -> None:
    assert liquidity_style.score == "liq_score"
    assert liquidity_style.description.startswith("Test liquidity")
    assert liquidity_style in styles.available_styles()
    shuffled = panel_with_volume.sample(fraction=1.0, shuffle=True, seed=2)
    scores = styles.compute_styles(shuffled, ["size", "liquidity_test"], params={"liquidity_test": {"window": 2}})
    assert scores.columns == ["date", "symbol", "sze_score", "liq_score"]
    assert scores.height == panel_with_volume.height
    assert scores.select(KEYS).equals(panel_with_volume.select(KEYS).sort(KEYS))
    frames_match(scores, reference_liquidity(panel_with_volume, 2), KEYS, ["liq_score"], atol=1e-12)
    frames_match(scores, styles.size(panel_with_volume), KEYS, ["sze_score"], atol=0.0)
    assert scores["liq_score"].drop_nulls().len() > 0.9 * scores.height


def test_compute_styles_defaults_to_the_styles_the_panel_supports(
    liquidity_style: styles.StyleFactor, market_panel: pl.DataFrame, panel_with_volume: pl.DataFrame
) -> None:
    without_value = market_panel.drop("book_price", "sales_price", "cf_price")
    use4 = ["beta_score", "resvol_score", "nlsize_score"]  # USE4's styles from returns and caps
    assert styles.compute_styles(without_value).columns == ["date", "symbol", "mom_score", "sze_score", *use4]
    # volume without shares outstanding: USE4's liquidity is left out, the custom one (volume and caps) is used
    with_everything = styles.compute_styles(panel_with_volume)
    assert with_everything.columns == ["date", "symbol", "mom_score", "val_score", "sze_score", *use4, "liq_score"]


def test_register_style_as_decorator_and_replace() -> None:
    @styles.register_style("decorated_test", inputs=("market_cap",))
    def decorated(df: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
        """First line.

        More text."""
        return df.lazy().select("date", "symbol", (-pl.col("market_cap")).alias("decorated_test_score"))

    try:
        registered = styles.get_style("decorated_test")
        assert registered.function is decorated
        assert registered.score == "decorated_test_score"
        assert registered.description == "First line."
        with pytest.raises(ValueError, match=r"style 'decorated_test' is already registered; pass replace=True"):
            styles.register_style("decorated_test", decorated)
        styles.register_style("decorated_test", decorated, score="other", replace=True)
        assert styles.get_style("decorated_test").score == "other"
    finally:
        styles.unregister_style("decorated_test")
    with pytest.raises(KeyError, match=r"no style factor named 'decorated_test'"):
        styles.get_style("decorated_test")


def test_registry_errors(market_panel: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"style 'momentum' is already registered; pass replace=True to overwrite"):
        styles.register_style("momentum", liquidity)
    with pytest.raises(ValueError, match=r"style name must be a non-empty identifier, got '1st'"):
        styles.register_style("1st", liquidity)
    with pytest.raises(ValueError, match=r"style name must be a non-empty identifier, got ''"):
        styles.register_style("", liquidity)
    with pytest.raises(KeyError, match=r"no style factor named 'nope'; registered: \[.*'momentum'"):
        styles.get_style("nope")
    with pytest.raises(KeyError, match=r"no style factor named 'nope'"):
        styles.compute_styles(market_panel, ["size", "nope"])
    with pytest.raises(KeyError, match=r"no style factor named 'nope'"):
        styles.unregister_style("nope")
    with pytest.raises(ValueError, match=r"params given for style\(s\) \['momentum'\] that are not requested"):
        styles.compute_styles(market_panel, ["size"], params={"momentum": {"lag": 5}})
    with pytest.raises(
        ValueError, match=r"style 'value' needs column\(s\) \['book_price', 'cf_price'\], which the panel lacks"
    ):
        styles.compute_styles(market_panel.drop("book_price", "cf_price"), ["value"])
    assert {s.name for s in styles.available_styles()} >= {"momentum", "value", "size"}


# --------------------------------------------------------------------------------------------------------------
# style input errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trailing_days": 0}, r"trailing_days must be a positive integer, got 0"),
        ({"trailing_days": 2.5}, r"trailing_days must be a positive integer, got 2.5"),
        ({"trailing_days": True}, r"trailing_days must be a positive integer, got True"),
        ({"lag": -1}, r"lag must be a non-negative integer, got -1"),
        ({"lag": 1.0}, r"lag must be a non-negative integer, got 1.0"),
        ({"half_life": 0}, r"half_life must be positive, got 0"),
        ({"half_life": -2.0}, r"half_life must be positive, got -2.0"),
        ({"half_life": float("inf")}, r"half_life must be positive, got inf"),
    ],
)
def test_momentum_rejects_bad_parameters(returns_panel: pl.DataFrame, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        styles.momentum(returns_panel, **kwargs)  # type: ignore[arg-type]


def test_style_input_errors(returns_panel: pl.DataFrame, market_panel: pl.DataFrame) -> None:
    duplicated = pl.concat([returns_panel, returns_panel.filter(pl.col("symbol") == "R05").head(1)])
    first = returns_panel.filter(pl.col("symbol") == "R05").head(1)
    with pytest.raises(
        ValueError,
        match=rf"momentum input: 2 rows share 1 \(date, symbol\) pairs, e\.g\. \({first['date'][0]}, R05\)",
    ):
        styles.momentum(duplicated, **MOMENTUM_PARAMS)
    with pytest.raises(ValueError, match=r"momentum: missing column\(s\) \['asset_returns'\]; the frame has"):
        styles.momentum(returns_panel.drop("asset_returns"))
    with pytest.raises(TypeError, match=r"momentum: expected a polars DataFrame or LazyFrame, got dict"):
        styles.momentum({"date": [], "symbol": []})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"size: missing column\(s\) \['market_cap'\]"):
        styles.size(market_panel.drop("market_cap"))
    with pytest.raises(ValueError, match=r"value: missing column\(s\) \['sales_price'\]"):
        styles.value(market_panel.drop("sales_price"))
    with pytest.raises(
        ValueError, match=r"need 0 <= lower_decile <= upper_decile <= 1, got lower_decile=0.9, upper_decile=0.1"
    ):
        styles.size(market_panel, lower_decile=0.9, upper_decile=0.1)
    with pytest.raises(ValueError, match=r"need 0 <= lower_decile <= upper_decile <= 1, got lower_decile=-0.1"):
        styles.size(market_panel, lower_decile=-0.1)
    with pytest.raises(ValueError, match=r"winsorize_features must be a fraction in \[0, 0.5\], got 0.7"):
        styles.value(market_panel, winsorize_features=0.7)
