// SERE Studio page script (loaded in <head> by app.py). The clip panels' buttons and keys are
// in pad.js. The resonance field: clicking a point sends its clip id to the app (a hidden textbox)
// and marks it with an arrow; the training replay frames, which gr.Plot does not pass to plotly,
// are restored from layout.meta.
(function () {
  if (window.__sereInstalled) return;
  window.__sereInstalled = true;

  function sendClip(clipId) {
    const box = document.querySelector("#sere-clicked textarea, #sere-clicked input");
    if (!box) return;
    box.value = clipId + "|" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
    box.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function restoreFrames(gd) {
    const meta = gd.layout && gd.layout.meta;
    if (!meta || !Array.isArray(meta.frames) || !window.Plotly) return;
    const key = String(meta.key || "") + ":" + meta.frames.length;
    if (gd.__sereFramesKey === key) return;
    gd.__sereFramesKey = key;
    const names = (gd._transitionData && gd._transitionData._frames || []).map((f) => f.name);
    const add = () => window.Plotly.addFrames(gd, meta.frames);
    if (names.length) window.Plotly.deleteFrames(gd).then(add); else add();
  }

  // The chosen clip gets an arrow on the map, so the listener knows which point is playing.
  function markChosen(gd, p) {
    if (!window.Plotly) return;
    const kept = (gd.layout.annotations || []).filter((a) => a.name !== "sere-chosen");
    kept.push({
      name: "sere-chosen", x: p.x, y: p.y, xref: "x", yref: "y", text: "selected",
      showarrow: true, arrowhead: 2, arrowwidth: 2, ax: 28, ay: -28,
      font: { size: 12 }, bgcolor: "rgba(255,255,255,0.85)", bordercolor: "#333",
    });
    window.Plotly.relayout(gd, { annotations: kept });
  }

  function hook(gd) {
    if (gd.__sereHooked || typeof gd.on !== "function") return;
    gd.__sereHooked = true;
    gd.on("plotly_click", function (ev) {
      const p = ev && ev.points && ev.points[0];
      const id = p && p.customdata && p.customdata[0];
      if (id && !String(id).startsWith("prototype:")) {
        sendClip(id);
        markChosen(gd, p);
      }
    });
    gd.on("plotly_afterplot", function () { restoreFrames(gd); });
    restoreFrames(gd);
  }

  function scan() {
    document.querySelectorAll("#sere-field .js-plotly-plot").forEach(hook);
  }
  new MutationObserver(scan).observe(document.documentElement, { childList: true, subtree: true });
  window.sereFieldFrames = function () {
    const gd = document.querySelector("#sere-field .js-plotly-plot");
    return gd && gd._transitionData ? (gd._transitionData._frames || []).length : 0;
  };
})();
