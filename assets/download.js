// One-click downloads (gr.HTML js_on_load; `element`, `props` and `watch` come from Gradio).
// props.value = {url, name, rev}: every new value with a url saves that file at once, as a link
// with a download name would. The url is an export's own address (an unguessable folder).
let last = (props.value || {}).rev;

watch("value", () => {
  const v = props.value || {};
  if (!v.url || v.rev === last) return;
  last = v.rev;
  const link = document.createElement("a");
  link.href = v.url;
  link.download = v.name || "";
  document.body.appendChild(link);
  link.click();
  link.remove();
  element.dataset.rev = String(v.rev);
  element.dataset.name = v.name || "";
});
