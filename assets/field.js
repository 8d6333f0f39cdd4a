// The resonance field (gr.HTML js_on_load; `element`, `props`, `trigger` and `watch` come from
// Gradio). props.value = {key, figure: {data, layout, frames}}: plotly (from PLOTLY_URL, which
// app.py writes into this script) draws it here, frames included, so the replay slider works. A click on a clip sends
// trigger('pick', {clip}); a box or lasso selection sends trigger('lasso', {clips}) (an empty list
// when cleared). What is chosen and selected comes back from the server on the selection pad
// (selection.js), which tells this map through a 'sere-field-mark' window event: the chosen clip
// gets an arrow, unselected clips grey out (plotly's own selection styling).
const PLOTLY_URL = "__PLOTLY_URL__";
let mark = window.__sereFieldMark || { chosen: null, clips: [] };

function plotDiv() {
  return element.querySelector(".sere-field-plot");
}

// plotly.js, loaded once per page as a module of its own (never through window.Plotly, which
// Gradio's plots set to their own build: a figure must be changed by the plotly that drew it).
function whenPlotly(then) {
  if (window.SerePlotly) return then();
  const url = PLOTLY_URL;
  if (!window.__serePlotlyLoading) {
    window.__serePlotlyLoading = fetch(url)
      .then((r) => { if (!r.ok) throw new Error("plotly.js: HTTP " + r.status); return r.text(); })
      .then((code) => {
        const module = { exports: {} };
        new Function("module", "exports", code)(module, module.exports);
        window.SerePlotly = module.exports;
      })
      .catch((err) => {  // a failed download is tried again, not remembered
        window.__serePlotlyLoading = null;
        element.dataset.error = String(err);
        throw err;
      });
  }
  window.__serePlotlyLoading.then(then, () => setTimeout(() => whenPlotly(then), 1000));
}

function clipOf(point) {
  const id = point && point.customdata && point.customdata[0];
  return id && !String(id).startsWith("prototype:") ? String(id) : null;
}

// Every change to the plot waits for the one before: plotly must not be restyled while it redraws
// (marks arrive as fast as the server answers). An error still reaches the page as an error.
let plotting = Promise.resolve();
function inTurn(step) {
  plotting = plotting.then(step).catch((err) => { setTimeout(() => { throw err; }); });
}

// One mark waiting is enough: it reads the latest `mark` when its turn comes.
let markWaiting = false;
function applyMark() {
  if (markWaiting) return;
  markWaiting = true;
  inTurn(() => { markWaiting = false; return drawMark(); });
}

function drawMark() {
  const plot = plotDiv();
  if (!plot || !plot.data || !window.SerePlotly) return null;
  const chosen = mark.chosen == null ? null : String(mark.chosen);
  const selected = new Set((mark.clips || []).map(String));
  const indices = [], picks = [];
  let arrow = null;
  plot.data.forEach((trace, i) => {
    if (!trace.meta || trace.meta.kind !== "clips") return;
    const ids = (trace.customdata || []).map((row) => String(row[0]));
    indices.push(i);
    picks.push(selected.size ? ids.flatMap((id, k) => (selected.has(id) ? [k] : [])) : null);
    const k = chosen === null ? -1 : ids.indexOf(chosen);
    if (k >= 0) arrow = { x: trace.x[k], y: trace.y[k] };
  });
  const kept = (plot.layout.annotations || []).filter((a) => a.name !== "sere-chosen");
  if (arrow) {
    kept.push({
      name: "sere-chosen", x: arrow.x, y: arrow.y, xref: "x", yref: "y", text: "chosen",
      showarrow: true, arrowhead: 2, arrowwidth: 2, ax: 28, ay: -28,
      font: { size: 12 }, bgcolor: "rgba(255,255,255,0.9)", bordercolor: "#333",
    });
  }
  return Promise.resolve(indices.length ? window.SerePlotly.restyle(plot, { selectedpoints: picks }, indices) : null)
    .then(() => window.SerePlotly.relayout(plot, { annotations: kept }))
    .then(() => {  // marked: tests and the page wait for these
      element.dataset.chosen = chosen || "";
      element.dataset.selected = String(selected.size);
    });
}

function hook(plot) {
  if (plot.__sereHooked) return;
  plot.__sereHooked = true;
  plot.on("plotly_click", (ev) => {
    const clip = clipOf(ev && ev.points && ev.points[0]);
    if (clip) trigger("pick", { clip: clip });
  });
  plot.on("plotly_selected", (ev) => {
    if (!ev) return;  // a click beside the points: plotly_deselect follows
    const clips = [...new Set((ev.points || []).map(clipOf).filter(Boolean))];
    trigger("lasso", { clips: clips });
  });
  plot.on("plotly_deselect", () => trigger("lasso", { clips: [] }));
}

function draw() {
  const v = props.value || {};
  const plot = plotDiv();
  if (!plot) { setTimeout(draw, 50); return; }  // js_on_load can run before the template is in place
  if (plot.__sereKey === v.key) return;
  if (!v.figure) {  // nothing trained yet: a line of text, and no plotly to load
    plot.__sereKey = v.key;
    inTurn(() => {
      if (plot.data && window.SerePlotly) window.SerePlotly.purge(plot);
      plot.textContent = v.message || "";
      element.dataset.key = v.key || "";
    });
    return;
  }
  if (element.offsetParent === null) return;  // a hidden tab: drawn when it is shown (see below)
  plot.__sereKey = v.key;
  if (!plot.data) plot.textContent = "";
  whenPlotly(() => inTurn(() => {
    const fig = v.figure;
    // react with the frames in the figure replaces the previous run's frames
    return window.SerePlotly.react(plot, { data: fig.data, layout: fig.layout, frames: fig.frames || [],
                                           config: { responsive: true, displaylogo: false,  // the camera saves a PNG
                                                     toImageButtonOptions: { filename: "resonance-field", scale: 2 } } })
      .then(() => { hook(plot); return drawMark(); })
      .then(() => {
        element.dataset.frames = String((fig.frames || []).length);
        element.dataset.key = v.key;  // drawn and marked: tests and the page wait for this
      });
  }));
}

window.addEventListener("sere-field-mark", (ev) => { mark = ev.detail || mark; applyMark(); });
// The figure is drawn (and plotly.js loaded) only once the field is on screen.
new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) draw(); }).observe(element);
window.sereFieldFrames = () => {
  const plot = plotDiv();
  return plot && plot._transitionData ? (plot._transitionData._frames || []).length : 0;
};
watch("value", draw);
draw();
