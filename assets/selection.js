// The field's selection pad (gr.HTML js_on_load; `element`, `props`, `trigger` and `watch` come
// from Gradio). props.value = {clips, chosen, rev, html, audio, ask}: the clips selected on the map
// (or in the clip browser) and the clip chosen last, as the server last answered (`ask`: the clip
// browser's question it answers). Its buttons send
// trigger('act', {action, clips, emotion, rev}) naming the clips on screen, so an action applies
// to the selection the user saw. Every answer tells the map what to mark ('sere-field-mark').
function tell() {
  const v = props.value || {};
  const mark = { chosen: v.chosen == null ? null : v.chosen, clips: v.clips || [], ask: v.ask == null ? null : v.ask };
  window.__sereFieldMark = mark;
  window.dispatchEvent(new CustomEvent("sere-field-mark", { detail: mark }));
  element.dataset.rev = String(v.rev || "");
  element.dataset.count = String(mark.clips.length);
}

element.addEventListener("click", (ev) => {
  const button = ev.target.closest("[data-action]");
  if (!button || !element.contains(button)) return;
  const v = props.value || {};
  if (!(v.clips || []).length) return;
  trigger("act", { action: button.dataset.action, clips: v.clips, emotion: button.dataset.emotion || null,
                   rev: v.rev });
});

watch("value", tell);
tell();
