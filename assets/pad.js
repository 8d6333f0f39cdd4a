// A clip pad (gr.HTML js_on_load; `element`, `props`, `trigger` and `watch` come from Gradio).
// Buttons and keys become one 'act' event that names the clip on screen (props.value.clip):
// the server acts on that clip, never on the one it thinks is current. While an action is on its
// way, further presses wait and then apply to the clip the answer shows, so five quick presses
// label five clips, one each. Keys act only while this pad is on screen and nobody is typing:
// 1-9 and 0 the emotions, S skip, U undo, Enter confirm the prediction, P play or pause.
let pending = null;  // {rev, at} of the action on its way
const waiting = [];

function send(action, emotion) {
  const v = props.value || {};
  if (!v.clip && action !== "undo") return;
  pending = { rev: v.rev, at: Date.now() };
  element.dataset.busy = "1";
  trigger("act", { action: action, clip: v.clip, emotion: emotion || null, rev: v.rev });
}

function request(action, emotion) {
  // An answer lost on the way (the server refused the action) frees the pad after 15 s.
  if (pending && Date.now() - pending.at < 15000) waiting.push([action, emotion]);
  else send(action, emotion);
}

watch("value", () => {
  const v = props.value || {};
  element.dataset.rev = String(v.rev || "");
  // Another event may redraw the pad meanwhile (a suggestion, a project change): only the answer
  // to the action on its way (it echoes that action's rev) frees the pad for the next press.
  if (pending && v.acted !== pending.rev) return;
  pending = null;
  element.dataset.busy = "";
  const next = waiting.shift();
  if (next) send(next[0], next[1]);
});

element.addEventListener("click", (ev) => {
  const button = ev.target.closest("[data-action]");
  if (!button || !element.contains(button)) return;
  request(button.dataset.action, button.dataset.emotion);
});

document.addEventListener("keydown", (ev) => {
  if (element.offsetParent === null || ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
  const t = ev.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
  if (t && t.tagName === "BUTTON" && (ev.key === "Enter" || ev.key === " ")) return;  // the button answers itself
  const kind = (props.value || {}).kind;
  let done = true;
  if (/^[0-9]$/.test(ev.key)) {
    const buttons = element.querySelectorAll("button[data-action='label']");
    const button = buttons[(Number(ev.key) + 9) % 10];
    if (button) request("label", button.dataset.emotion); else done = false;
  } else if ((ev.key === "s" || ev.key === "S") && kind === "label") request("skip");
  else if (ev.key === "u" || ev.key === "U") request("undo");
  else if (ev.key === "Enter" && element.querySelector("[data-action='confirm']")) request("confirm");
  else if (ev.key === "p" || ev.key === "P") {
    const audio = element.querySelector("audio");
    if (audio) { if (audio.paused) audio.play(); else audio.pause(); } else done = false;
  } else done = false;
  if (done) ev.preventDefault();
});
