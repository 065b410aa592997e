// Factor Engine dashboard, Live view: today's factor returns so far, pushed by the WebSocket
// {API}/live/stream/<model>?channel=<name> whenever a feed sends prices to the channel. Loaded after dashboard.js,
// whose globals it uses (API, state, apiKey, plotlyReady, plotted, chartDiv, fail, showError, parseWeights,
// families, BASE_LAYOUT, PLOT_CONFIG). Charts keep the dashboard's chart contract, plus data-update="<updates
// applied>" and data-update-id="<id of the last update included>" on each live chart.
"use strict";

const LIVE_DRAW_MS = 250; // redraw at most four times a second, whatever the feed's rate
const FAMILY_COLORS = { market: "#1f2d3d", sectors: "#4c78a8", styles: "#f58518" };

const live = { socket: null, modelId: null, channel: null, latest: null, timer: null, lastDraw: 0, weights: null };

function setLiveStatus(message) {
  document.getElementById("live-status").textContent = message;
}

function liveUrl(modelId, channel) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const query = `channel=${encodeURIComponent(channel)}`;
  return `${scheme}//${window.location.host}${API}/live/stream/${encodeURIComponent(modelId)}?${query}`;
}

function liveDisconnect() {
  if (live.socket) {
    const socket = live.socket;
    live.socket = null;
    socket.close(1000, "the dashboard left the channel");
  }
}

/** Subscribe to the channel of the selected model (closing any earlier subscription). */
function liveConnect() {
  liveDisconnect();
  if (!state.model) return;
  const channel = document.getElementById("live-channel").value.trim() || "default";
  const socket = new WebSocket(liveUrl(state.model.id, channel));
  live.socket = socket;
  live.modelId = state.model.id;
  live.channel = channel;
  live.latest = null;
  showError("live-error", "");
  setLiveStatus(`connecting to channel ${channel}…`);
  socket.onopen = () => {
    const key = apiKey();
    if (key) socket.send(JSON.stringify({ type: "auth", api_key: key })); // browsers cannot set headers
    if (live.weights) sendPortfolio(live.weights);
  };
  socket.onmessage = (event) => {
    if (live.socket === socket) onLiveMessage(JSON.parse(event.data));
  };
  socket.onclose = (event) => {
    if (live.socket !== socket) return;
    live.socket = null;
    setLiveStatus(`disconnected (${event.code}${event.reason ? `: ${event.reason}` : ""})`);
  };
}

function onLiveMessage(message) {
  if (message.type === "ready") {
    setLiveStatus(
      `subscribed to channel ${message.channel}: model as of ${message.as_of} (${message.n_assets} assets); ` +
        "waiting for updates",
    );
  } else if (message.type === "factor_returns") {
    live.latest = message;
    scheduleLiveDraw();
  } else if (message.type === "error") {
    const target = live.weights && /weights|portfolio/.test(message.detail) ? "live-portfolio-error" : "live-error";
    showError(target, message.detail);
    console.warn(`live: ${message.detail}`);
  } else if (message.type === "ok" && message.of === "portfolio") {
    showError("live-portfolio-error", (message.warnings || []).join("\n"));
  }
}

function scheduleLiveDraw() {
  if (live.timer !== null) return;
  const wait = Math.max(0, LIVE_DRAW_MS - (performance.now() - live.lastDraw));
  live.timer = setTimeout(() => {
    live.timer = null;
    live.lastDraw = performance.now();
    drawLive(live.latest).catch((error) => showError("live-error", error.message || String(error)));
  }, wait);
}

/** Plotly.react (no new plot per update) with the chart contract's data-* attributes. */
function redraw(name, traces, layout, result) {
  const div = chartDiv(name);
  div.removeAttribute("data-error");
  const points = plotted(traces);
  return plotlyReady
    .then(() => Plotly.react(div, traces, { ...BASE_LAYOUT, ...layout }, PLOT_CONFIG))
    .then(() => {
      div.dataset.points = String(points);
      div.dataset.update = String(result.updates);
      div.dataset.updateId = String(result.update_id);
      div.dataset.rendered = points > 0 ? "true" : "false";
    });
}

function percent(value, digits = 3) {
  return value === null || value === undefined ? "—" : `${(100 * value).toFixed(digits)}%`;
}

function fillRows(body, rows) {
  body.replaceChildren(
    ...rows.map(([label, value, raw]) => {
      const row = document.createElement("tr");
      const name = document.createElement("th");
      name.textContent = label;
      const cell = document.createElement("td");
      cell.textContent = value;
      if (raw !== undefined && raw !== null) cell.dataset.value = String(raw);
      row.append(name, cell);
      return row;
    }),
  );
}

function drawSummary(result) {
  const table = document.getElementById("live-summary");
  table.caption.textContent = `Model ${result.model_id.slice(0, 8)} as of ${result.as_of}, channel ${result.channel}`;
  const excluded = Object.entries(result.excluded).map(([why, n]) => `${n} ${why}`).join("; ") || "none";
  fillRows(table.tBodies[0], [
    ["updates applied", String(result.updates), result.updates],
    ["last update id", String(result.update_id ?? "—")],
    ["assets priced", String(result.n_priced), result.n_priced],
    ["assets in the regression", String(result.n_assets), result.n_assets],
    ["left out", excluded],
    ["R²", result.r2 === null ? "—" : result.r2.toFixed(4), result.r2],
    ["factors not estimated", result.dropped.length ? `${result.dropped.join(", ")} (${result.reason})` : "none"],
    ["results this page missed (slow)", String(result.dropped_results), result.dropped_results],
  ]);
  table.hidden = false;
  setLiveStatus(`channel ${result.channel}: update ${result.updates} at ${new Date().toLocaleTimeString()}`);
}

function factorTraces(result) {
  const groups = families(state.model);
  return Object.entries(groups).map(([family, names]) => {
    const wanted = new Set(names);
    const x = [];
    const y = [];
    result.factors.forEach((factor, k) => {
      if (wanted.has(factor)) {
        x.push(factor);
        y.push(result.factor_returns[k]);
      }
    });
    return { type: "bar", name: family, x, y, marker: { color: FAMILY_COLORS[family] } };
  });
}

function drawPnl(result) {
  const portfolio = result.portfolio;
  const table = document.getElementById("live-pnl");
  if (!portfolio) {
    table.hidden = true;
    return Promise.resolve();
  }
  table.caption.textContent = `Portfolio: ${portfolio.n_priced} of ${portfolio.n_holdings} holdings priced`;
  fillRows(table.tBodies[0], [
    ["total", percent(portfolio.pnl), portfolio.pnl],
    ["factors", percent(portfolio.factor_total), portfolio.factor_total],
    ["specific", percent(portfolio.specific_pnl), portfolio.specific_pnl],
    ["risk now (annualized)", percent(portfolio.annualized.total_risk, 2), portfolio.annualized.total_risk],
  ]);
  table.hidden = false;
  const names = [...portfolio.factor_pnl.map((row) => row.factor), "specific"];
  const values = [...portfolio.factor_pnl.map((row) => row.pnl), portfolio.specific_pnl];
  return redraw(
    "live-portfolio-pnl",
    [{ type: "bar", name: "P&L", x: names, y: values, marker: { color: names.map((n) => (n === "specific" ? "#54a24b" : "#4c78a8")) } }],
    { yaxis: { tickformat: ".2%" }, margin: { l: 60, r: 40, t: 30, b: 130 }, showlegend: false },
    result,
  );
}

async function drawLive(result) {
  if (!result) return;
  showError("live-error", "");
  drawSummary(result);
  await Promise.all([
    redraw(
      "live-factor-returns",
      factorTraces(result),
      {
        yaxis: { tickformat: ".2%" },
        margin: { l: 60, r: 40, t: 30, b: 130 },
        barmode: "group",
        legend: { orientation: "h", x: 0, y: 1.12 },
      },
      result,
    ),
    drawPnl(result),
  ]);
}

function sendPortfolio(weights) {
  const allow = document.getElementById("live-allow-unnormalized").checked;
  live.socket.send(JSON.stringify({ type: "portfolio", weights, allow_unnormalized: allow }));
}

function usePortfolio(event) {
  event.preventDefault();
  showError("live-portfolio-error", "");
  let weights;
  try {
    weights = parseWeights(document.getElementById("live-portfolio-text").value, "portfolio");
  } catch (error) {
    showError("live-portfolio-error", error.message);
    return;
  }
  live.weights = weights;
  if (live.socket && live.socket.readyState === WebSocket.OPEN) sendPortfolio(weights);
  else liveConnect();
}

function liveVisible() {
  return !document.getElementById("view-live").hidden;
}

function startLive() {
  document.querySelector('.tab[data-view="live"]').addEventListener("click", () => {
    if (!live.socket || live.modelId !== state.model?.id) liveConnect();
  });
  document.getElementById("live-form").onsubmit = (event) => {
    event.preventDefault();
    liveConnect();
  };
  document.getElementById("live-portfolio-form").onsubmit = usePortfolio;
  // another model: follow it when the view is open, else leave the channel
  document.getElementById("model-select").addEventListener("change", () => {
    for (const name of ["live-factor-returns", "live-portfolio-pnl"]) {
      if (window.Plotly) Plotly.purge(chartDiv(name));
      chartDiv(name).dataset.rendered = "false";
    }
    document.getElementById("live-summary").hidden = true;
    document.getElementById("live-pnl").hidden = true;
    if (liveVisible()) setTimeout(liveConnect, 0); // after dashboard.js has set state.model
    else liveDisconnect();
  });
}

startLive();
