// wordcanvas web page: talks to the JSON API of the same server (no build step, no dependencies).
"use strict";

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// FastAPI errors: {"detail": "text"} or {"detail": [{"loc": [...], "msg": "..."}]}
async function errorText(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = Array.isArray(body.detail)
      ? body.detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".")}: ${e.msg}`).join("\n")
      : String(body.detail ?? JSON.stringify(body));
  } catch (e) {
    detail = response.statusText;
  }
  return `Request failed (${response.status}): ${detail}`;
}

function addToGallery(src, caption, note) {
  const figure = document.createElement("figure");
  figure.className = "result";
  const img = document.createElement("img");
  img.src = src;
  img.alt = caption;
  const text = document.createElement("figcaption");
  text.textContent = caption;
  const small = document.createElement("span");
  small.className = "note";
  small.textContent = note;
  text.appendChild(small);
  figure.append(img, text);
  $("gallery").prepend(figure);
}

function busy(button, status, on, text) {
  button.disabled = on;
  status.textContent = text || "";
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) throw new Error(await errorText(response));
    const info = await response.json();
    for (const m of info.models) {
      const option = new Option(`${m.name} (${m.resolution}px)`, m.name, m.name === info.default, m.name === info.default);
      $("model").add(option);
    }
    for (const s of info.styles) $("style").add(new Option(s, s));
    $("n").max = info.limits.max_n;
  } catch (e) {
    showError(`Could not load the model list: ${e.message}`);
  }
}

async function generate(event) {
  event.preventDefault();
  clearError();
  const button = $("generate"), status = $("status");
  const fields = {
    prompt: $("prompt").value,
    n: Number($("n").value || 1),
    seed: Number($("seed").value || 0),
    model: $("model").value || undefined,
    upscale: Number($("upscale").value),
    style_alpha: Number($("style-alpha").value || 1),
  };
  if ($("style").value) fields.style = $("style").value;
  let request;
  const file = $("style-file").files[0];
  if (file) {  // a style image goes up as multipart
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) form.append(k, String(v));
    form.append("style_image", file);
    request = { method: "POST", body: form };
  } else {
    request = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(fields) };
  }
  busy(button, status, true, "generating…");
  try {
    const response = await fetch("/v1/generate", request);
    if (!response.ok) throw new Error(await errorText(response));
    const result = await response.json();
    for (const im of result.images.slice().reverse()) {
      addToGallery(`data:image/png;base64,${im.png}`, im.prompt,
                   `seed ${im.seed} · ${result.width}px · ${result.model}`);
    }
    status.textContent = `${result.images.length} image(s) in ${Math.round(result.elapsed_ms)} ms`;
    button.disabled = false;
  } catch (e) {
    showError(e.message);
    busy(button, status, false);
  }
}

async function edit(event) {
  event.preventDefault();
  clearError();
  const button = $("edit"), status = $("edit-status");
  const file = $("edit-file").files[0];
  if (!file) { showError("Choose an image to edit."); return; }
  const form = new FormData();
  form.append("image", file);
  form.append("text", $("edit-text").value);
  if ($("edit-source").value) form.append("source", $("edit-source").value);
  form.append("seed", $("edit-seed").value || "0");
  if ($("edit-keep").checked) form.append("local_blend", "0.2");  // the threshold measured in docs/edit_toy-faces
  if ($("edit-strength").value) form.append("strength", $("edit-strength").value);
  if ($("model").value) form.append("model", $("model").value);
  busy(button, status, true, "editing… (a GAN inverts the image first: this takes a while)");
  try {
    const response = await fetch("/v1/edit", { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorText(response));
    const url = URL.createObjectURL(await response.blob());
    addToGallery(url, $("edit-text").value, `edited · ${file.name}`);
    busy(button, status, false, "done");
  } catch (e) {
    showError(e.message);
    busy(button, status, false);
  }
}

function switchTab(tab) {
  for (const t of document.querySelectorAll(".tab")) {
    const active = t === tab;
    t.classList.toggle("active", active);
    $(t.dataset.panel).hidden = !active;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => switchTab(t));
  $("panel-generate").addEventListener("submit", generate);
  $("panel-edit").addEventListener("submit", edit);
  $("edit-strength").addEventListener("change", () => {  // auto chooses the local blend itself
    const auto = $("edit-strength").value === "auto";
    if (auto) $("edit-keep").checked = false;
    $("edit-keep").disabled = auto;
  });
  loadModels();
});
