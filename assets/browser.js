// The clip browser (gr.HTML js_on_load; `element`, `props`, `trigger` and `watch` come from
// Gradio). props.value = {clips, html, rev}: one page of clips. A row's checkbox selects the clip:
// a change sends trigger('choose', {clips, ask}) with the whole selection (the clips of other
// pages that were selected stay selected), which the selection pad and the map then show. A file
// name sends trigger('open', {clip}). A selection made on the map checks its rows here
// ('sere-field-mark', sent by selection.js).
//
// The ticks are this page's own state until the server has answered them: one question at a time
// (`ask` numbers it, the selection pad's answer carries it back), the latest ticks sent when the
// answer comes, and an older answer never unticks what was ticked since.
let asked = 0, answered = 0, sentAt = 0, queued = false, wanted = null;

function selected() {
  return wanted || new Set(((window.__sereFieldMark || {}).clips || []).map(String));
}

function paint() {
  const chosen = selected();
  let all = true, any = false;
  element.querySelectorAll("tbody tr[data-clip]").forEach((row) => {
    const on = chosen.has(row.dataset.clip);
    row.querySelector("input[type=checkbox]").checked = on;
    row.classList.toggle("sere-row-selected", on);
    all = all && on; any = true;
  });
  const box = element.querySelector("input.sere-all");
  if (box) box.checked = any && all;
  const v = props.value || {};
  element.dataset.rev = String(v.rev || "");
  element.dataset.rows = String((v.clips || []).length);
}

function send() {
  const page = new Set(((props.value || {}).clips || []).map(String));
  wanted = new Set([...selected()].filter((c) => !page.has(c)));
  element.querySelectorAll("tbody tr[data-clip]").forEach((row) => {
    if (row.querySelector("input[type=checkbox]").checked) wanted.add(row.dataset.clip);
  });
  // a question unanswered for 10 s (the server failed it) no longer holds the next one back
  if (asked > answered && Date.now() - sentAt < 10000) queued = true;
  else ask();
}

function ask() {
  asked += 1; sentAt = Date.now(); queued = false;
  trigger("choose", { clips: [...wanted], ask: asked });
}

function answer(ev) {
  if (wanted && ev.detail && ev.detail.ask === asked) {
    answered = asked;
    if (queued) ask(); else wanted = null;
  }
  paint();
}

element.addEventListener("change", (ev) => {
  const box = ev.target;
  if (!box || box.type !== "checkbox") return;
  if (box.classList.contains("sere-all")) {
    element.querySelectorAll("tbody input[type=checkbox]").forEach((b) => { b.checked = box.checked; });
  }
  send();
});

element.addEventListener("click", (ev) => {
  const open = ev.target.closest("button.sere-open");
  if (open && element.contains(open)) trigger("open", { clip: open.dataset.clip });
});

window.addEventListener("sere-field-mark", answer);
watch("value", paint);
paint();
