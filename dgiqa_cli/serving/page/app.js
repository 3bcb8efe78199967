// The dgiqa page: pick or drop pictures, see each score with its interval; click one for its explanation.
// Everything goes to this server only (the page's Content-Security-Policy forbids anything else).
"use strict";

const rows = document.querySelector("#results tbody");
const keyRow = document.getElementById("key-row");
const keyInput = document.getElementById("key");
let scale = "";

function headers(extra) {
  const h = Object.assign({}, extra);
  if (keyInput.value) h["Authorization"] = "Bearer " + keyInput.value;
  return h;
}

async function call(path, options) {
  const response = await fetch(path, options);
  if (response.status === 401) keyRow.hidden = false;
  return response;
}

async function describeModel() {
  const line = document.getElementById("model");
  const response = await call("/v1/model", { headers: headers() });
  if (!response.ok) {
    line.textContent = response.status === 401 ? "Enter the API key, then pick pictures." : "Model: unavailable";
    return;
  }
  const model = await response.json();
  scale = model.scale;
  line.textContent = `${model.family} · ${model.weights} · ${model.settings.crops} crops · scores: ${model.scale}`;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fmt(value) {
  return value === null || value === undefined ? "" : value.toFixed(4);
}

async function scoreFile(file) {
  const row = document.createElement("tr");
  const thumb = document.createElement("img");
  thumb.className = "thumb";
  thumb.alt = file.name;
  thumb.src = URL.createObjectURL(file);
  cell(row, "").appendChild(thumb);
  cell(row, file.name);
  const scoreCell = cell(row, "scoring…", "score");
  const intervalCell = cell(row, "");
  const sizeCell = cell(row, "");
  rows.appendChild(row);
  const response = await call("/v1/score?name=" + encodeURIComponent(file.name), {
    method: "POST",
    headers: headers({ "Content-Type": file.type || "application/octet-stream" }),
    body: file,
  });
  let result;
  try {
    result = await response.json();
  } catch (e) {
    result = { error: `HTTP ${response.status}` };
  }
  if (response.ok && result.score !== null) {
    scoreCell.textContent = fmt(result.score);
    scoreCell.title = scale;
    intervalCell.textContent = result.score_ci95_low === null ? "(one crop)" : `${fmt(result.score_ci95_low)} – ${fmt(result.score_ci95_high)}`;
    sizeCell.textContent = `${result.width}×${result.height}`;
    row.addEventListener("click", () => explain(file));
  } else {
    scoreCell.textContent = "–";
    scoreCell.className = "error";
    intervalCell.textContent = result.error || `HTTP ${response.status}`;
    intervalCell.className = "error";
  }
  row.dataset.state = "done";
}

async function explain(file) {
  const figure = document.getElementById("explain");
  const caption = document.getElementById("explain-caption");
  const panel = document.getElementById("explain-panel");
  figure.hidden = false;
  figure.dataset.state = "loading";
  caption.textContent = `Explaining ${file.name}…`;
  panel.removeAttribute("src");
  const quality = document.getElementById("quality").checked ? "true" : "false";
  const response = await call(`/v1/explain?quality=${quality}&name=` + encodeURIComponent(file.name), {
    method: "POST",
    headers: headers({ "Content-Type": file.type || "application/octet-stream", Accept: "image/png" }),
    body: file,
  });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    caption.textContent = `${file.name}: ${answer.error || "HTTP " + response.status}`;
    return;
  }
  panel.onload = () => (figure.dataset.state = "shown");
  panel.src = URL.createObjectURL(await response.blob());
  caption.textContent = file.name;
}

function scoreAll(files) {
  for (const file of files) scoreFile(file);
}

const drop = document.getElementById("drop");
document.getElementById("pick").addEventListener("change", (event) => scoreAll(event.target.files));
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  scoreAll(event.dataTransfer.files);
});
keyInput.addEventListener("change", describeModel);
describeModel();
