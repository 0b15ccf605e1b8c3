// The page: a tab per loaded model, each a form that calls the JSON API under /api/ and shows the answer.
// Plain JavaScript, no build step and nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const TASKS = ["textgen", "translation", "captioning"];

// --- talking to the API --------------------------------------------------------------------------

/** The error line of a refused request (the API answers {"error": "..."}), or the status when there is none. */
async function refusal(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON: fall through */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

async function postJSON(path, body, signal) {
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  });
  if (!response.ok) throw new Error(await refusal(response));
  return response.json();
}

/** Reads a server-sent event stream, calling onEvent(name, data) for each event until the stream ends. */
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      onEvent(name, JSON.parse(data));
    }
  }
}

function showError(task, message) {
  const box = $(`${task}-error`);
  box.textContent = message ? `Error: ${message}` : "";
  box.hidden = !message;
}

// --- tabs ----------------------------------------------------------------------------------------

function selectTab(task, focus) {
  for (const other of TASKS) {
    const tab = $(`tab-${other}`), chosen = other === task;
    tab.setAttribute("aria-selected", String(chosen));
    tab.tabIndex = chosen ? 0 : -1;
    $(`panel-${other}`).hidden = !chosen;
  }
  if (focus) $(`tab-${task}`).focus();
}

function setUpTabs(loaded) {
  const shown = TASKS.filter((task) => task in loaded);
  for (const task of shown) {
    const tab = $(`tab-${task}`);
    tab.hidden = false;
    tab.addEventListener("click", () => selectTab(task, false));
    tab.addEventListener("keydown", (event) => {  // arrow keys move between tabs, as in any tab list
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = shown[(shown.indexOf(task) + step + shown.length) % shown.length];
      selectTab(next, true);
      event.preventDefault();
    });
  }
  selectTab(shown[0], false);
}

function describe(loaded) {
  const parts = [];
  for (const [task, info] of Object.entries(loaded)) {
    const name = Array.isArray(info.checkpoint) ? info.checkpoint.join(" + ") : info.checkpoint;
    const langs = info.source_lang ? ` ${info.source_lang}→${info.target_lang}` : "";
    const size = info.parameters >= 1e6 ? `${(info.parameters / 1e6).toFixed(1)} M` : `${Math.round(info.parameters / 1e3)} k`;
    parts.push(`${task}${langs} (${name}, ${size} parameters)`);
  }
  return `Loaded: ${parts.join("; ")}.`;
}

// --- text generation -----------------------------------------------------------------------------

let streams = null;  // the AbortController of the streams in progress

/** The request the form describes: sampling options are sent only with method "sample" (the API refuses
 * options the method would ignore). */
function generateRequest(seedOffset) {
  const request = { prompt: $("prompt").value, method: $("gen-method").value, max_len: Number($("gen-max-len").value) };
  if (request.method === "sample") {
    request.temperature = Number($("temperature").value);
    request.top_p = Number($("top-p").value);
    request.seed = Number($("seed").value) + seedOffset;
  }
  return request;
}

function showRequest() {
  $("temperature-value").textContent = Number($("temperature").value).toFixed(1);
  $("gen-request").textContent = `POST /api/generate/stream ${JSON.stringify(generateRequest(0))}`;
}

function sampleBox(title, prompt) {
  const box = document.createElement("div");
  box.className = "sample";
  const heading = document.createElement("h2");
  heading.textContent = title;
  const text = document.createElement("pre");
  const shownPrompt = document.createElement("span");
  shownPrompt.className = "prompt";
  shownPrompt.textContent = prompt;
  const generated = document.createElement("span");
  generated.className = "generated";
  text.append(shownPrompt, generated);
  box.append(heading, text);
  $("samples").append(box);
  return generated;
}

async function streamInto(request, target, signal) {
  const response = await fetch("/api/generate/stream", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request), signal,
  });
  if (!response.ok) throw new Error(await refusal(response));
  await readEvents(response, (name, data) => {
    if (name === "piece") target.textContent += data.text;
    else if (name === "error") throw new Error(data.error);
  });
}

async function generate(event) {
  event.preventDefault();
  if (streams) streams.abort();  // a new request stops the old streams (the server stops generating them)
  const controller = (streams = new AbortController());
  showError("textgen", "");
  $("samples").textContent = "";
  const count = $("three").checked && $("gen-method").value === "sample" ? 3 : 1;
  const requests = Array.from({ length: count }, (_, i) => generateRequest(i));
  const runs = requests.map((request) => {
    const title = request.seed === undefined ? request.method : `seed ${request.seed}, temperature ${request.temperature.toFixed(1)}`;
    return streamInto(request, sampleBox(title, request.prompt), controller.signal);
  });
  $("generate").disabled = true;
  try {
    await Promise.all(runs);
  } catch (err) {
    if (err.name !== "AbortError") showError("textgen", err.message);
  } finally {
    if (streams === controller) $("generate").disabled = false;
  }
}

// --- translation ---------------------------------------------------------------------------------

function heatmap(attention) {
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  head.append(document.createElement("th"));
  for (const piece of attention.source) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = piece;
    head.append(th);
  }
  const body = table.createTBody();
  attention.weights.forEach((row, t) => {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = attention.target[t];
    tr.append(th);
    row.forEach((weight, s) => {
      const cell = tr.insertCell();
      cell.style.background = `rgba(47, 95, 208, ${weight.toFixed(3)})`;
      cell.title = `${attention.target[t]} → ${attention.source[s]}: ${weight.toFixed(2)}`;
    });
  });
  return table;
}

async function translate(event) {
  event.preventDefault();
  showError("translation", "");
  const beam = Number($("beam-size").value), nBest = Number($("n-best").value);
  const request = { sentences: [$("source").value], method: "beam", beam_size: beam, n_best: nBest, attention: true };
  $("translate").disabled = true;
  try {
    const answer = await postJSON("/api/translate", request);
    const list = $("nbest");
    list.textContent = "";
    const found = answer.nbest ? answer.nbest[0] : [{ text: answer.translations[0], score: null }];
    for (const { text, score } of found) {
      const item = document.createElement("li");
      item.textContent = text;
      if (score !== null) {
        const shown = document.createElement("span");
        shown.className = "score";
        shown.textContent = score.toFixed(3);
        item.append(shown);
      }
      list.append(item);
    }
    $("heatmap").replaceChildren(heatmap(answer.attention[0]));
    $("heatmap-figure").hidden = false;
  } catch (err) {
    showError("translation", err.message);
  } finally {
    $("translate").disabled = false;
  }
}

// --- captioning ----------------------------------------------------------------------------------

/** Draws the square the model saw (centre-cropped or padded on white) onto a canvas. */
function drawView(canvas, bitmap, view) {
  const side = 384;
  canvas.width = canvas.height = side;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, side, side);
  const scale = side / view.side;
  context.drawImage(bitmap, -view.left * scale, -view.top * scale, bitmap.width * scale, bitmap.height * scale);
}

/** Shades the picture where a word did not look: its map (rows x columns over the square), smoothly scaled. */
function drawMap(map) {
  const overlay = $("overlay"), rows = map.length, cols = map[0].length;
  const grid = new OffscreenCanvas(cols, rows), pixels = new ImageData(cols, rows);
  const peak = Math.max(...map.flat()) || 1;
  map.flat().forEach((value, i) => { pixels.data[4 * i + 3] = Math.round(200 * (1 - value / peak)); });
  grid.getContext("2d").putImageData(pixels, 0, 0);
  overlay.width = overlay.height = $("shown").width;
  const context = overlay.getContext("2d");
  context.imageSmoothingEnabled = true;
  context.drawImage(grid, 0, 0, overlay.width, overlay.height);
  overlay.hidden = false;
}

function showWords(attention) {
  const line = $("caption-words");
  line.textContent = "";
  attention.words.forEach((word, i) => {
    const span = document.createElement("span");
    span.textContent = word;
    span.tabIndex = 0;
    const look = () => {
      for (const other of line.children) other.classList.toggle("looking", other === span);
      drawMap(attention.maps[i]);
    };
    span.addEventListener("mouseenter", look);
    span.addEventListener("focus", look);
    line.append(span, " ");
  });
  $("caption-hint").hidden = attention.words.length === 0;
}

async function caption(file) {
  showError("captioning", "");
  const form = new FormData();
  form.append("image", file);
  form.append("method", "beam");
  form.append("beam_size", $("cap-beam").value);
  form.append("n_best", String(Math.min(3, Number($("cap-beam").value))));
  form.append("attention", "true");
  $("caption-words").textContent = "Captioning…";
  $("caption-nbest").textContent = "";
  try {
    const response = await fetch("/api/caption", { method: "POST", body: form });
    if (!response.ok) throw new Error(await refusal(response));
    const answer = await response.json();
    const bitmap = await createImageBitmap(file);
    drawView($("shown"), bitmap, answer.view);
    $("shown").hidden = false;
    $("overlay").hidden = true;
    for (const text of answer.captions) {
      const item = document.createElement("li");
      item.textContent = text;
      $("caption-nbest").append(item);
    }
    if (answer.attention) showWords(answer.attention);
    else $("caption-words").textContent = answer.captions[0];
  } catch (err) {
    $("caption-words").textContent = "";
    showError("captioning", err.message);
  }
}

function setUpPictures() {
  const drop = $("drop");
  $("picture").addEventListener("change", () => { if ($("picture").files[0]) caption($("picture").files[0]); });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { $("picture").click(); event.preventDefault(); }
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) caption(event.dataTransfer.files[0]);
  });
}

// --- start ---------------------------------------------------------------------------------------

async function start() {
  for (const id of ["prompt", "gen-method", "temperature", "top-p", "seed", "gen-max-len"]) {
    $(id).addEventListener("input", showRequest);
  }
  showRequest();
  $("generate-form").addEventListener("submit", generate);
  $("translate-form").addEventListener("submit", translate);
  setUpPictures();
  try {
    const response = await fetch("/api/models");
    if (!response.ok) throw new Error(await refusal(response));
    const loaded = await response.json();
    setUpTabs(loaded);
    $("status").textContent = describe(loaded);
  } catch (err) {
    $("status").textContent = `Error: the models could not be listed (${err.message}).`;
    $("status").classList.add("error");
  }
}

start();
