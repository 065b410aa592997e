// Factor Engine dashboard: plain JS, no build step. Every figure comes from the public API under
// document.body.dataset.api. Chart contract: each <div class="fe-chart" data-chart="<name>"> gets
// data-rendered="true" and data-points="<plotted values>" once drawn with data, or data-error="<message>".
"use strict";

const API = document.body.dataset.api;
const KEY_STORAGE = "factor-engine-api-key";
const MAX_POINTS = 520; // longest time series drawn (weekly sampling of long daily histories)
const VOL_WINDOW = 63; // days of the rolling volatility
const TRADING_DAYS = 252;
const MAX_BINS = 50;
const PLOT_CONFIG = { responsive: true, displaylogo: false };
const BASE_LAYOUT = { margin: { l: 55, r: 20, t: 10, b: 40 }, legend: { font: { size: 10 } }, hovermode: "closest" };

const state = { models: [], model: null, date: null, loads: 0 };
// plotly.min.js is deferred: this script runs before it and starts the API reads meanwhile
const plotlyReady = window.Plotly
  ? Promise.resolve()
  : new Promise((resolve) => document.addEventListener("DOMContentLoaded", resolve, { once: true }));

class ApiError extends Error {
  constructor(message, status, detail) {
    super(message);
    this.status = status;
    this.detail = detail;
  }
}

// ------------------------------------------------------------------------------------------------
// API

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function formatDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${(item.loc || []).join(".")}: ${item.msg}`).join("\n");
  }
  return JSON.stringify(detail);
}

async function api(path, body) {
  const headers = {};
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  const options = { headers };
  if (body !== undefined) {
    options.method = "POST";
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, options);
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      detail = (await response.json()).detail ?? detail;
    } catch (_) {
      // not JSON: keep the status line
    }
    throw new ApiError(`${options.method || "GET"} ${path}: ${formatDetail(detail)}`, response.status, detail);
  }
  return response.json();
}

// ------------------------------------------------------------------------------------------------
// charts

function chartDiv(name) {
  return document.querySelector(`.fe-chart[data-chart="${name}"]`);
}

function plotted(traces) {
  let count = 0;
  for (const trace of traces) {
    const values = trace.type === "heatmap" ? trace.z.flat() : trace.y;
    for (const value of values) if (value !== null && value !== undefined && !Number.isNaN(value)) count += 1;
  }
  return count;
}

function draw(name, traces, layout, tag) {
  const div = chartDiv(name);
  div.removeAttribute("data-error");
  div.dataset.rendered = "false";
  const points = plotted(traces);
  return plotlyReady.then(() => Plotly.newPlot(div, traces, { ...BASE_LAYOUT, ...layout }, PLOT_CONFIG)).then(() => {
    if (tag !== undefined) div.dataset.date = tag;
    div.dataset.points = String(points);
    div.dataset.rendered = points > 0 ? "true" : "false";
    if (points === 0) fail(name, "no data to plot");
  });
}

function fail(name, message) {
  const div = chartDiv(name);
  if (window.Plotly) Plotly.purge(div); // no stale figure under the message
  div.dataset.rendered = "false";
  div.dataset.error = message;
  console.error(`chart ${name}: ${message}`);
}

function guarded(name, render) {
  try {
    const drawn = render();
    return Promise.resolve(drawn).catch((error) => fail(name, error.message || String(error)));
  } catch (error) {
    fail(name, error.message || String(error));
    return Promise.resolve();
  }
}

// ------------------------------------------------------------------------------------------------
// series helpers

/** Indices of at most MAX_POINTS evenly spaced dates of n, always keeping the last one. */
function sampleIndices(n) {
  const step = Math.max(1, Math.ceil(n / MAX_POINTS));
  const indices = [];
  for (let i = (n - 1) % step; i < n; i += step) indices.push(i);
  return indices;
}

function column(matrix, k) {
  return matrix.map((row) => row[k]);
}

/** prod(1 + f) − 1 along the dates; a missing return counts as 0. */
function cumulative(values) {
  let growth = 1;
  return values.map((value) => {
    if (value !== null) growth *= 1 + value;
    return growth - 1;
  });
}

/** Annualized sample standard deviation over the last VOL_WINDOW dates (null before a full window). */
function rollingVolatility(values) {
  const out = new Array(values.length).fill(null);
  let sum = 0;
  let squares = 0;
  let count = 0;
  for (let i = 0; i < values.length; i += 1) {
    const entering = values[i];
    if (entering !== null) {
      sum += entering;
      squares += entering * entering;
      count += 1;
    }
    if (i >= VOL_WINDOW) {
      const leaving = values[i - VOL_WINDOW];
      if (leaving !== null) {
        sum -= leaving;
        squares -= leaving * leaving;
        count -= 1;
      }
    }
    if (i >= VOL_WINDOW - 1 && count >= 2) {
      const variance = Math.max(0, (squares - (sum * sum) / count) / (count - 1));
      out[i] = Math.sqrt(variance * TRADING_DAYS);
    }
  }
  return out;
}

function lines(dates, series, names, indices) {
  const x = indices.map((i) => dates[i]);
  return names.map((name, k) => ({
    type: "scatter",
    mode: "lines",
    name,
    x,
    y: indices.map((i) => series[k][i]),
  }));
}

// ------------------------------------------------------------------------------------------------
// Factors view

function families(model) {
  const grouped = new Set([...model.sectors, ...model.styles]);
  return {
    market: model.factors.filter((name) => !grouped.has(name)),
    sectors: model.sectors,
    styles: model.styles,
  };
}

function renderFactorReturns(model, data) {
  const index = new Map(data.factors.map((name, k) => [name, k]));
  const dates = data.dates;
  const indices = sampleIndices(dates.length);
  const daily = data.factors.map((_, k) => column(data.returns, k));
  const growth = daily.map(cumulative);
  const groups = families(model);
  const drawn = [];
  for (const [family, names] of Object.entries(groups)) {
    const present = names.filter((name) => index.has(name));
    const chart = `cumulative-returns-${family}`;
    drawn.push(
      guarded(chart, () =>
        draw(
          chart,
          lines(dates, present.map((name) => growth[index.get(name)]), present, indices),
          { yaxis: { tickformat: ".0%" } },
        ),
      ),
    );
  }
  drawn.push(
    guarded("rolling-volatility", () =>
      draw(
        "rolling-volatility",
        lines(dates, daily.map(rollingVolatility), data.factors, indices),
        { yaxis: { tickformat: ".0%" } },
      ),
    ),
  );
  return Promise.all(drawn);
}

function renderDiagnostics(data) {
  const indices = sampleIndices(data.dates.length);
  const x = indices.map((i) => data.dates[i]);
  return Promise.all([
    guarded("diagnostics-assets", () =>
      draw("diagnostics-assets", [{ type: "scatter", mode: "lines", name: "assets used", x, y: indices.map((i) => data.n_assets[i]) }], {
        yaxis: { rangemode: "tozero" },
      }),
    ),
    guarded("diagnostics-r2", () =>
      draw("diagnostics-r2", [{ type: "scatter", mode: "lines", name: "R²", x, y: indices.map((i) => data.r2[i]) }], {
        yaxis: { range: [0, 1] },
      }),
    ),
  ]);
}

/** The covariance turned into correlations (null where a variance is missing or not positive). */
function correlations(covariance) {
  const sd = covariance.map((row, i) => (row[i] !== null && row[i] > 0 ? Math.sqrt(row[i]) : null));
  return covariance.map((row, i) =>
    row.map((value, j) => (value === null || sd[i] === null || sd[j] === null ? null : value / (sd[i] * sd[j]))),
  );
}

function renderCorrelation(data) {
  return guarded("correlation-heatmap", () =>
    draw(
      "correlation-heatmap",
      [
        {
          type: "heatmap",
          x: data.factors,
          y: data.factors,
          z: correlations(data.covariance),
          zmin: -1,
          zmax: 1,
          colorscale: "RdBu",
          reversescale: true,
        },
      ],
      { margin: { l: 150, r: 20, t: 10, b: 120 }, yaxis: { autorange: "reversed" } },
      data.date,
    ),
  );
}

/** Histograms (≤ MAX_BINS bins on a common range) of each style's scores at the date. */
function renderDistributions(model, data) {
  return guarded("style-distributions", () => {
    const styles = model.styles.filter((name) => data.factors.includes(name));
    const columns = styles.map((name) =>
      column(data.exposures, data.factors.indexOf(name)).filter((v) => v !== null && Number.isFinite(v)),
    );
    let low = Infinity;
    let high = -Infinity;
    for (const values of columns) {
      for (const value of values) {
        if (value < low) low = value;
        if (value > high) high = value;
      }
    }
    const n = Math.max(...columns.map((values) => values.length), 0);
    const bins = Math.min(MAX_BINS, Math.max(5, Math.ceil(Math.sqrt(n))));
    const width = high > low ? (high - low) / bins : 1;
    const traces = styles.map((name, k) => {
      const counts = new Array(bins).fill(0);
      for (const value of columns[k]) counts[Math.min(bins - 1, Math.floor((value - low) / width))] += 1;
      return {
        type: "bar",
        name,
        x: counts.map((_, b) => low + (b + 0.5) * width),
        y: counts,
        width,
        opacity: 0.55,
      };
    });
    return draw("style-distributions", traces, { barmode: "overlay", xaxis: { title: { text: "score" } } }, data.date);
  });
}

// ------------------------------------------------------------------------------------------------
// Portfolio view

/** [{symbol, weight}] of "symbol,weight" lines (a header line and # comments are skipped). */
function parseWeights(text, what) {
  const rows = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const parts = line.split(/[,;\t]/).map((part) => part.trim().replace(/^"|"$/g, ""));
    if (parts.length < 2) throw new Error(`${what}, line ${i + 1}: expected "symbol,weight", got "${line}"`);
    const weight = Number(parts[1]);
    if (parts[1] === "" || !Number.isFinite(weight)) {
      if (rows.length === 0 && i === lines.findIndex((l) => l.trim())) return; // header
      throw new Error(`${what}, line ${i + 1}: weight "${parts[1]}" is not a number`);
    }
    rows.push({ symbol: parts[0], weight });
  });
  if (rows.length === 0) throw new Error(`${what}: no "symbol,weight" line`);
  return rows;
}

function showError(id, message) {
  const element = document.getElementById(id);
  element.textContent = message;
  element.hidden = !message;
}

function renderExposures(data, withBenchmark) {
  const factors = data.exposures.map((row) => row.factor);
  const series = withBenchmark ? ["portfolio", "benchmark", "active"] : ["portfolio"];
  const traces = series.map((what) => ({ type: "bar", name: what, x: factors, y: data.exposures.map((row) => row[what]) }));
  return draw("portfolio-exposures", traces, { barmode: "group", margin: { l: 55, r: 20, t: 10, b: 130 } }, data.date);
}

function renderRisk(data, withBenchmark) {
  // as in the report: each factor's (and the specific part's) contribution to annualized risk, summing to it
  const names = [...data.factor_contributions.map((row) => row.factor), "specific"];
  const shares = [...data.factor_contributions.map((row) => row.variance_share), data.daily.specific_variance_share];
  const total = data.annualized.total_risk;
  const traces = [{ type: "bar", name: "contribution to annualized risk", x: names, y: shares.map((s) => s * total) }];
  const body = document.querySelector("#risk-totals tbody");
  body.replaceChildren();
  const figures = [
    ["total risk", "total_risk"],
    ["factor risk", "factor_risk"],
    ["specific risk", "specific_risk"],
    ["tracking error", "tracking_error"],
  ];
  for (const [label, field] of figures) {
    const row = document.createElement("tr");
    row.dataset.figure = field;
    const cells = [label, data.daily[field], data.annualized[field]].map((value, i) => {
      const cell = document.createElement("td");
      cell.textContent = i === 0 ? value : value === null ? "—" : `${(100 * value).toFixed(3)}%`;
      if (i > 0 && value !== null) cell.dataset.value = String(value);
      return cell;
    });
    row.append(...cells);
    body.append(row);
  }
  const table = document.getElementById("risk-totals");
  table.caption.textContent = withBenchmark
    ? `Active risk (portfolio − benchmark) on ${data.date}`
    : `Risk of the portfolio on ${data.date}`;
  table.hidden = false;
  return draw(
    "portfolio-risk",
    traces,
    { yaxis: { tickformat: ".1%" }, margin: { l: 55, r: 20, t: 10, b: 130 } },
    data.date,
  );
}

async function analyzePortfolio(event) {
  event.preventDefault();
  showError("portfolio-error", "");
  showError("benchmark-error", "");
  showError("portfolio-warnings", "");
  let weights;
  let benchmark = null;
  try {
    weights = parseWeights(document.getElementById("portfolio-text").value, "portfolio");
  } catch (error) {
    showError("portfolio-error", error.message);
    console.error(error.message);
    return;
  }
  const benchmarkText = document.getElementById("benchmark-text").value;
  if (benchmarkText.trim()) {
    try {
      benchmark = parseWeights(benchmarkText, "benchmark");
    } catch (error) {
      showError("benchmark-error", error.message);
      console.error(error.message);
      return;
    }
  }
  const allowUnnormalized = document.getElementById("allow-unnormalized").checked;
  const request = { model_id: state.model.id, date: state.date, weights, benchmark, allow_unnormalized: allowUnnormalized };
  setStatus("computing the portfolio's exposures and risk…");
  try {
    const [exposures, risk] = await Promise.all([api("/portfolio/exposures", request), api("/portfolio/risk", request)]);
    await Promise.all([
      guarded("portfolio-exposures", () => renderExposures(exposures, benchmark !== null)),
      guarded("portfolio-risk", () => renderRisk(risk, benchmark !== null)),
    ]);
    // weights not summing to 1 are used as given: say so (both answers carry the same warnings)
    showError("portfolio-warnings", (risk.warnings || []).join("\n"));
    setStatus(`portfolio on ${exposures.date}`);
  } catch (error) {
    const onBenchmark = error instanceof ApiError && /benchmark/.test(formatDetail(error.detail));
    showError(onBenchmark ? "benchmark-error" : "portfolio-error", error.message);
    for (const name of ["portfolio-exposures", "portfolio-risk"]) fail(name, error.message);
    setStatus("");
  }
}

// ------------------------------------------------------------------------------------------------
// Optimize (POST /portfolio/optimize with the keys of `factor-engine optimize`)

const SHOWN_HOLDINGS = 15;

/** {factor: [lower, upper]} of "factor=LO:HI" lines (an empty side is open: null). */
function parseBounds(text) {
  const bounds = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const at = line.lastIndexOf("=");
    const range = line.slice(at + 1).split(":");
    const factor = line.slice(0, at).trim();
    if (at < 1 || !factor || range.length !== 2) throw new Error(`factor bounds, line ${i + 1}: expected "factor=LO:HI"`);
    bounds[factor] = range.map((side) => {
      if (side.trim() === "") return null;
      const value = Number(side);
      if (!Number.isFinite(value)) throw new Error(`factor bounds, line ${i + 1}: "${side}" is not a number`);
      return value;
    });
  });
  return bounds;
}

function optionalNumber(id) {
  const text = document.getElementById(id).value.trim();
  return text === "" ? null : Number(text);
}

function optimizeRequest() {
  const benchmarkText = document.getElementById("benchmark-text").value;
  const neutral = document
    .getElementById("optimize-neutral")
    .value.split(/[,\s]+/)
    .filter((name) => name);
  return {
    model_id: state.model.id,
    date: state.date,
    objective: document.getElementById("optimize-objective").value,
    benchmark: benchmarkText.trim() ? parseWeights(benchmarkText, "benchmark") : null,
    long_only: document.getElementById("optimize-long-only").checked,
    neutral,
    factor_bounds: parseBounds(document.getElementById("optimize-bounds").value),
    max_weight: optionalNumber("optimize-max-weight"),
    max_tracking_error: optionalNumber("optimize-max-te"),
  };
}

function renderHoldings(result) {
  const body = document.querySelector("#optimized-weights tbody");
  const largest = [...result.weights].sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, SHOWN_HOLDINGS);
  body.replaceChildren(
    ...largest.map((row) => {
      const line = document.createElement("tr");
      const symbol = document.createElement("td");
      symbol.textContent = row.symbol;
      const weight = document.createElement("td");
      weight.textContent = `${(100 * row.weight).toFixed(2)}%`;
      weight.dataset.value = String(row.weight);
      line.append(symbol, weight);
      return line;
    }),
  );
  const table = document.getElementById("optimized-weights");
  table.caption.textContent =
    `Optimized on ${result.date}: ${result.weights.length} holdings (largest ${largest.length} shown); ` +
    `${result.constraints.join("; ")}; ${result.status} (${result.solver})`;
  table.hidden = false;
}

/** Optimize, put the weights into the portfolio box and analyze them as any other portfolio. */
async function optimizePortfolio(event) {
  event.preventDefault();
  showError("optimize-error", "");
  let request;
  try {
    request = optimizeRequest();
  } catch (error) {
    showError("optimize-error", error.message);
    console.error(error.message);
    return;
  }
  setStatus("optimizing…");
  let result;
  try {
    result = await api("/portfolio/optimize", request);
  } catch (error) {
    showError("optimize-error", error.message); // e.g. 422: the conflicting constraints
    document.getElementById("optimized-weights").hidden = true;
    setStatus("");
    return;
  }
  renderHoldings(result);
  document.getElementById("portfolio-text").value = result.weights.map((row) => `${row.symbol},${row.weight}`).join("\n");
  // a long-short optimum may be leveraged: analyze it as given
  document.getElementById("allow-unnormalized").checked = !request.long_only;
  await analyzePortfolio({ preventDefault() {} });
}

function readFileInto(inputId, textId) {
  const input = document.getElementById(inputId);
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (!file) return;
    file.text().then((text) => {
      document.getElementById(textId).value = text;
    });
  });
}

// ------------------------------------------------------------------------------------------------
// page flow

function setStatus(message) {
  document.getElementById("status").textContent = message;
}

function showGlobalError(error) {
  const message = error.message || String(error);
  showError("global-error", message);
  console.error(message);
}

function fillSelect(select, values, labels, chosen) {
  select.replaceChildren(
    ...values.map((value, i) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = labels[i];
      option.selected = value === chosen;
      return option;
    }),
  );
}

/** Date-dependent charts: correlation heatmap and style distributions. */
async function loadDate(date, load) {
  const model = state.model;
  const query = date ? `?date=${date}` : "";
  const [covariance, exposures] = await Promise.all([
    api(`/models/${model.id}/covariance${query}`),
    api(`/models/${model.id}/exposures${query}`),
  ]);
  if (load !== state.loads) return;
  state.date = covariance.date;
  await Promise.all([renderCorrelation(covariance), renderDistributions(model, exposures)]);
}

// an ISO time of the API (UTC) to the minute, e.g. "2026-12-01 18:03 UTC": when a model was built or updated
function utcMinute(iso) {
  const time = new Date(iso);
  return Number.isNaN(time.getTime()) ? String(iso) : `${time.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

async function loadModel(modelId) {
  const load = ++state.loads;
  const model = state.models.find((m) => m.id === modelId);
  state.model = model;
  showError("global-error", "");
  setStatus(`loading model ${model.id}…`);
  document.getElementById("model-info").textContent =
    `${model.n_assets} assets, ${model.n_dates} dates (${model.first_date} → ${model.last_date}), ` +
    `${model.factors.length} factors; covariance horizon ${model.horizon} day(s). ` +
    `Built ${utcMinute(model.created_at)}; last updated ${model.updated_at ? utcMinute(model.updated_at) : "never"}.`;
  const base = `/models/${model.id}`;
  const tic = performance.now();
  const [dates, returns, diagnostics] = await Promise.all([
    api(`${base}/dates`),
    api(`${base}/factor-returns`),
    api(`${base}/diagnostics`),
    loadDate(null, load),
  ]);
  if (load !== state.loads) return;
  fillSelect(document.getElementById("date-select"), dates.dates, dates.dates, state.date);
  await Promise.all([renderFactorReturns(model, returns), renderDiagnostics(diagnostics)]);
  setStatus(`model ${model.id} drawn in ${Math.round(performance.now() - tic)} ms`);
}

async function changeDate(date) {
  const load = ++state.loads;
  setStatus(`loading ${date}…`);
  try {
    await loadDate(date, load);
    setStatus(`date ${date}`);
  } catch (error) {
    showGlobalError(error);
  }
}

function showView(view) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === view);
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  // charts drawn while hidden have no size: let plotly fit them to the now visible view
  for (const div of document.querySelectorAll(`#view-${view} .fe-chart[data-rendered="true"]`)) Plotly.Plots.resize(div);
}

function start() {
  const keyInput = document.getElementById("api-key");
  keyInput.value = apiKey();
  keyInput.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, keyInput.value.trim());
    loadModels().catch(showGlobalError);
  });
  for (const tab of document.querySelectorAll(".tab")) tab.onclick = () => showView(tab.dataset.view);
  document.getElementById("portfolio-form").onsubmit = analyzePortfolio;
  document.getElementById("optimize-form").onsubmit = optimizePortfolio;
  readFileInto("portfolio-file", "portfolio-text");
  readFileInto("benchmark-file", "benchmark-text");
  document.getElementById("model-select").onchange = (event) => loadModel(event.target.value).catch(showGlobalError);
  document.getElementById("date-select").onchange = (event) => changeDate(event.target.value);
  loadModels().catch(showGlobalError);
}

async function loadModels() {
  showError("global-error", "");
  setStatus("loading models…");
  state.models = await api("/models");
  if (state.models.length === 0) {
    setStatus("no model in the store: build one with POST /risk-model/create or `factor-engine build`");
    return;
  }
  const ids = state.models.map((m) => m.id);
  const labels = state.models.map(
    (m) =>
      `${m.id.slice(0, 8)} · ${m.first_date} → ${m.last_date} · ${m.n_assets} assets · ` +
      (m.updated_at ? `updated ${utcMinute(m.updated_at)}` : "never updated"),
  );
  fillSelect(document.getElementById("model-select"), ids, labels, ids[0]);
  await loadModel(ids[0]);
}

start();
