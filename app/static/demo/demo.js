// The demo page: draw, upload or pick an image, add seeded noise, and see what the public API returns.
// Same origin only; no library. Images are 28x28 grayscale, values 0..255, light shapes on black.
"use strict";

const SIZE = 28;
const PIXELS = SIZE * SIZE;
const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  clean: null,        // Uint8Array(784) when the clean image is known (drawing, sample)
  upload: null,       // the uploaded File, sent as it is
  source: "draw",     // "draw" | "upload" | "sample": which input the results come from
  apiKey: sessionStorage.getItem("denoise-api-key") || "",
  runs: 0,            // finished runs, in the page's data-runs attribute (tests wait on it)
};

// ---------- the API ----------

class ApiError extends Error {}

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  if (state.apiKey) headers.set("Authorization", `Bearer ${state.apiKey}`);
  const response = await fetch(path, { ...init, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch (_) { /* not our error body: keep the status line */ }
    if (response.status === 401) $("key-box").hidden = false;
    throw new ApiError(message);
  }
  return response;
}

function query(extra = {}) {
  const params = new URLSearchParams({ model: $("model").value, ...extra });
  return params.toString();
}

// ---------- pixels, PNGs and canvases ----------

function toPng(pixels) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = SIZE;
  const context = canvas.getContext("2d");
  const image = context.createImageData(SIZE, SIZE);
  for (let i = 0; i < PIXELS; i++) {
    image.data.set([pixels[i], pixels[i], pixels[i], 255], i * 4);
  }
  context.putImageData(image, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function fromPng(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const data = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const pixels = new Uint8Array(bitmap.width * bitmap.height);
  for (let i = 0; i < pixels.length; i++) pixels[i] = data[i * 4];
  return pixels;
}

function show(canvasId, pixels) {
  const canvas = $(canvasId);
  const context = canvas.getContext("2d");
  if (!pixels) {
    context.clearRect(0, 0, SIZE, SIZE);
    return;
  }
  const image = context.createImageData(SIZE, SIZE);
  for (let i = 0; i < PIXELS; i++) image.data.set([pixels[i], pixels[i], pixels[i], 255], i * 4);
  context.putImageData(image, 0, 0);
}

async function showBlob(canvasId, blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = $(canvasId);
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = true;
  context.drawImage(bitmap, 0, 0, SIZE, SIZE);
}

// ---------- quality figures (as scikit-image computes them, data range 1) ----------

function psnr(a, b) {
  let sum = 0;
  for (let i = 0; i < PIXELS; i++) sum += ((a[i] - b[i]) / 255) ** 2;
  const mse = sum / PIXELS;
  return mse === 0 ? Infinity : 10 * Math.log10(1 / mse);
}

function ssim(a, b) {
  // 7x7 uniform windows, sample covariances, K1 = 0.01, K2 = 0.03, mean over the valid windows.
  const w = 7, n = w * w, c1 = 0.01 ** 2, c2 = 0.03 ** 2, cov = n / (n - 1);
  let total = 0, count = 0;
  for (let y = 0; y + w <= SIZE; y++) {
    for (let x = 0; x + w <= SIZE; x++) {
      let sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
      for (let dy = 0; dy < w; dy++) {
        for (let dx = 0; dx < w; dx++) {
          const i = (y + dy) * SIZE + x + dx, va = a[i] / 255, vb = b[i] / 255;
          sa += va; sb += vb; saa += va * va; sbb += vb * vb; sab += va * vb;
        }
      }
      const ma = sa / n, mb = sb / n;
      const va = cov * (saa / n - ma * ma), vb = cov * (sbb / n - mb * mb), vab = cov * (sab / n - ma * mb);
      total += ((2 * ma * mb + c1) * (2 * vab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
      count++;
    }
  }
  return total / count;
}

function metrics(id, result) {
  if (!state.clean || state.source === "upload") {
    $(id).textContent = "";
    return;
  }
  const p = psnr(state.clean, result);
  $(id).textContent = `PSNR ${Number.isFinite(p) ? p.toFixed(2) : "∞"} dB · SSIM ${ssim(state.clean, result).toFixed(3)}`;
}

// ---------- seeded noise ----------

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normal(random) {
  const u = 1 - random(), v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

function addNoise(clean, kind, level, seed) {
  const random = mulberry32(seed);
  const out = new Uint8Array(PIXELS);
  for (let i = 0; i < PIXELS; i++) {
    const x = clean[i] / 255;
    let y;
    if (kind === "gaussian") y = x + level * normal(random);
    else if (kind === "speckle") y = x + x * level * normal(random);
    else if (kind === "shifted") y = x + 0.5 + 0.5 * normal(random);
    else {
      const hit = random() < level, salt = random() < 0.5;
      y = hit ? (salt ? 1 : 0) : x;
    }
    out[i] = Math.round(Math.min(1, Math.max(0, y)) * 255);
  }
  return out;
}

// ---------- the latent heat map ----------

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function colour(t) {
  const scaled = Math.min(0.9999, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.floor(scaled), f = scaled - i, [a, b] = [VIRIDIS[i], VIRIDIS[i + 1]];
  return a.map((v, k) => Math.round(v + (b[k] - v) * f));
}

function showLatent(values, shape) {
  const [h, w, channels] = shape;
  const box = $("latent");
  box.replaceChildren();
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  for (let c = 0; c < channels; c++) {
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.setAttribute("aria-label", `latent channel ${c}`);
    const context = canvas.getContext("2d");
    const image = context.createImageData(w, h);
    for (let p = 0; p < h * w; p++) {
      image.data.set([...colour((values[p * channels + c] - lo) / span), 255], p * 4);
    }
    context.putImageData(image, 0, 0);
    box.append(canvas);
  }
}

// ---------- running the model ----------

function errorBox() {
  return { draw: "draw-error", upload: "upload-error", sample: "sample-error" }[state.source];
}

function clearErrors() {
  for (const id of ["draw-error", "upload-error", "sample-error"]) $(id).textContent = "";
}

function servedBy(response) {
  const model = response.headers.get("X-Model"), version = response.headers.get("X-Model-Version");
  if (model) $("served-by").textContent = `served by ${model} ${version}`;
  $("anomaly").textContent = verdict(response, model);
}

// The API's verdict on the input (X-Anomaly), with the score and the model's threshold (GET /models).
function verdict(response, model) {
  const score = response.headers.get("X-Anomaly-Score");
  if (score === null) return "";
  const unusual = response.headers.get("X-Anomaly") === "true";
  const info = (state.models || []).find((m) => m.name === model);
  const threshold = info && info.anomaly ? Number(info.anomaly.threshold) : null;
  const said = unusual ? `unusual for ${model}: unlike the images it was trained on` : `typical for ${model}`;
  const figures = threshold === null ? `anomaly score ${Number(score).toFixed(2)}` :
    `anomaly score ${Number(score).toFixed(2)}, ${unusual ? "above" : "not above"} its threshold ${threshold.toFixed(2)}`;
  return `Input ${said} (${figures})`;
}

// The clean panel: the clean image where one is known (a drawing, a sample), else why there is none.
function showClean(pixels) {
  $("clean").hidden = !pixels;
  $("clean-caption").textContent = pixels ? "clean" : "clean: none for an upload (nothing to compare with)";
  if (pixels) show("clean", pixels);
}

async function run() {
  try {
    await runOnce();
  } finally {
    document.body.dataset.runs = String(++state.runs);
  }
}

async function runOnce() {
  clearErrors();
  let body, options = {};
  if (state.source === "upload") {
    if (!state.upload) return;
    body = state.upload;
    options = { resize: $("resize").checked, invert: $("invert").checked };
    showClean(null);
    await showBlob("noisy", state.upload).catch(() => show("noisy", null));
  } else {
    if (!state.clean) return;
    const noisy = addNoise(state.clean, $("noise-kind").value, Number($("noise-level").value), Number($("seed").value));
    showClean(state.clean);
    show("noisy", noisy);
    body = await toPng(noisy);
  }
  const headers = { "Content-Type": "image/png", Accept: "image/png" };
  try {
    const denoisedResponse = await api(`/denoise?${query(options)}`, { method: "POST", body, headers });
    servedBy(denoisedResponse);
    const denoised = await fromPng(await denoisedResponse.blob());
    show("denoised", denoised);
    metrics("denoised-metrics", denoised);
    const encoded = await (await api(`/encode?${query(options)}`, { method: "POST", body, headers })).json();
    showLatent(encoded.latents[0], encoded.latent_shape);
    const rebuilt = await api(`/reconstruct?${query()}`, {
      method: "POST", body: JSON.stringify(encoded), headers: { "Content-Type": "application/json", Accept: "image/png" },
    });
    const reconstructed = await fromPng(await rebuilt.blob());
    show("reconstructed", reconstructed);
    metrics("reconstructed-metrics", reconstructed);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    for (const id of ["denoised", "reconstructed"]) show(id, null);
    $("denoised-metrics").textContent = $("reconstructed-metrics").textContent = "";
    $(errorBox()).textContent = error.message;
  }
}

// ---------- inputs ----------

function setupPad() {
  const pad = $("pad"), context = pad.getContext("2d");
  const clear = () => { context.fillStyle = "#000"; context.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let last = null;
  const at = (event) => {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
  };
  pad.addEventListener("pointerdown", (event) => { pad.setPointerCapture(event.pointerId); last = at(event); });
  pad.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = at(event);
    context.strokeStyle = "#fff";
    context.lineWidth = 22;
    context.lineCap = context.lineJoin = "round";
    context.beginPath();
    context.moveTo(...last);
    context.lineTo(...next);
    context.stroke();
    last = next;
  });
  const end = () => {
    if (!last) return;
    last = null;
    useDrawing();
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", clear);
  $("use-drawing").addEventListener("click", useDrawing);

  function useDrawing() {
    // Each 10x10 block of the 280x280 pad averages into one of the 28x28 pixels.
    const data = context.getImageData(0, 0, pad.width, pad.height).data, block = pad.width / SIZE;
    const pixels = new Uint8Array(PIXELS);
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        let sum = 0;
        for (let dy = 0; dy < block; dy++) {
          for (let dx = 0; dx < block; dx++) sum += data[((y * block + dy) * pad.width + x * block + dx) * 4];
        }
        pixels[y * SIZE + x] = Math.round(sum / (block * block));
      }
    }
    state.clean = pixels;
    state.source = "draw";
    run();
  }
}

async function loadSamples() {
  const box = $("samples");
  box.replaceChildren();
  $("sample-error").textContent = "";
  try {
    const { samples } = await (await api(`/models/${encodeURIComponent($("model").value)}/samples`)).json();
    samples.forEach((sample, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-label", `sample ${index + 1}: ${sample.label}`);
      button.title = sample.label;
      const img = document.createElement("img");
      img.src = `data:image/png;base64,${sample.png}`;
      img.alt = "";
      button.append(img);
      button.addEventListener("click", async () => {
        for (const other of box.children) other.setAttribute("aria-pressed", "false");
        button.setAttribute("aria-pressed", "true");
        const bytes = Uint8Array.from(atob(sample.png), (c) => c.charCodeAt(0));
        state.clean = await fromPng(new Blob([bytes], { type: "image/png" }));
        state.source = "sample";
        run();
      });
      box.append(button);
    });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    $("sample-error").textContent = error.message;
  }
}

async function loadModels() {
  try {
    const { default_model: fallback, models } = await (await api("/models")).json();
    state.models = models;
    $("model").replaceChildren(...models.map((m) => new Option(`${m.name} ${m.version}`, m.name, false, m.name === fallback)));
    await loadSamples();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    $("served-by").textContent = error.message;
  }
}

function setupControls() {
  $("model").addEventListener("change", async () => { await loadSamples(); run(); });
  $("file").addEventListener("change", () => {
    state.upload = $("file").files[0] || null;
    state.source = "upload";
    run();
  });
  for (const id of ["resize", "invert"]) $(id).addEventListener("change", () => state.source === "upload" && run());
  const level = $("noise-level");
  const levelChanged = () => { $("noise-level-value").value = level.value; if (state.source !== "upload") run(); };
  level.addEventListener("input", levelChanged);
  $("noise-kind").addEventListener("change", () => {
    level.disabled = $("noise-kind").value === "shifted";
    levelChanged();
  });
  $("seed").addEventListener("change", () => state.source !== "upload" && run());
  $("new-seed").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 4294967295));
    if (state.source !== "upload") run();
  });
  $("key-box").addEventListener("submit", (event) => {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    sessionStorage.setItem("denoise-api-key", state.apiKey);
    loadModels();
  });
}

setupPad();
setupControls();
loadModels();
