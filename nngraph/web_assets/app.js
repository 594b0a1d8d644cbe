// nngraph web page: runs model.onnx with onnxruntime-web (WASM, one thread) and fits the page to
// the model described in model.json (written by `nngraph web`). No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let META = null;
let SESSION = null;

function fail(message) {
  const box = $("status");
  box.className = "error";
  box.textContent = message;
  $("about").textContent = "";
  return message;
}

async function init() {
  if (location.protocol === "file:") {
    throw new Error("This page was opened as a file (file://): browsers do not let it load the model and " +
      "the WebAssembly runtime that way. Serve the folder over http instead: python -m http.server -d <this folder>, " +
      "then open http://localhost:8000/");
  }
  if (typeof ort === "undefined") {
    throw new Error("The onnxruntime-web runtime (ort.wasm.min.js) could not be loaded. Without network access, " +
      "rebuild the page with nngraph web --runtime-dir <onnxruntime-web/dist> so the runtime files are copied next to it.");
  }
  const response = await fetch("model.json");
  if (!response.ok) throw new Error("model.json could not be loaded (" + response.status + ")");
  META = await response.json();
  ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which a plain http.server does not give
  ort.env.wasm.wasmPaths = new URL(META.runtime, location.href).href;
  try {
    SESSION = await ort.InferenceSession.create("model.onnx", {executionProviders: ["wasm"]});
  } catch (e) {
    throw new Error("onnxruntime-web " + META.ort_web + " could not load the model or its WebAssembly files: " + e);
  }
  $("about").textContent = describe(META) + " Computed in this browser by onnxruntime-web " +
    ort.env.versions.web + ".";
  $(META.kind).hidden = false;
  ({image: setupImage, charlm: setupCharLM, form: setupForm})[META.kind]();
}

function describe(m) {
  if (m.kind === "image") {
    const g = m.image;
    return `An image classifier: ${g.channels} x ${g.height} x ${g.width} pixels from 0 to ${m.pixel_max}, ` +
      `${(m.classes || []).length || m.output_shape[1]} classes.`;
  }
  if (m.kind === "charlm") return `A character language model: ${m.vocab.length} characters, context ${m.context}.`;
  return `Input ${m.input}: ${m.size} numbers per sample; output ${m.output}.`;
}

// ---- running the model ---------------------------------------------------------------------

async function runModel(values, shape) {
  const data = META.type === "int64" ? BigInt64Array.from(values, (v) => BigInt(v)) : Float32Array.from(values);
  const feeds = {[META.input]: new ort.Tensor(META.type, data, shape)};
  const out = (await SESSION.run(feeds))[META.output];
  return {data: Array.from(out.data, Number), dims: Array.from(out.dims)};
}

function softmax(xs) {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

function probabilities(scores) {
  return META.probabilities ? scores : softmax(scores);
}

// ---- image classifier: draw, reduce to the model's pixels the way training images were made ----

function inputShape(batch) {
  const g = META.image;
  return g.layout === "nchw" ? [batch, g.channels, g.height, g.width] : [batch, g.height * g.width];
}

// The pad's drawing (ink = white on black) as the model's input: the drawing's bounding box scaled,
// keeping its aspect, into the whole frame (UCI digits: 32 x 32 bitmaps normalized to their box,
// then 4 x 4 blocks counted) or into a 20 x 20 box centred by mass in 28 x 28 (MNIST); pixel values
// in the training data's units (0 .. pixel_max). Returns the H x W intensities in 0..1 too.
function padToInput(pad) {
  const g = META.image;
  const W = pad.width, H = pad.height;
  const src = pad.getContext("2d").getImageData(0, 0, W, H).data;
  let x0 = W, y0 = H, x1 = -1, y1 = -1;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    if (src[(y * W + x) * 4] > 25) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  }
  const cells = new Float32Array(g.height * g.width);
  if (x1 >= 0) {
    const S = 10;  // each model pixel is the mean of S x S samples of the fitted drawing
    const big = document.createElement("canvas");
    big.width = g.width * S; big.height = g.height * S;
    const ctx = big.getContext("2d");
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, big.width, big.height);
    const box = META.fit === "mnist" ? 20 / 28 : 1.0;
    const bw = x1 - x0 + 1, bh = y1 - y0 + 1;
    const scale = Math.min(big.width * box / bw, big.height * box / bh);
    const dw = bw * scale, dh = bh * scale;
    ctx.imageSmoothingEnabled = true; ctx.imageSmoothingQuality = "high";
    ctx.drawImage(pad, x0, y0, bw, bh, (big.width - dw) / 2, (big.height - dh) / 2, dw, dh);
    const d = ctx.getImageData(0, 0, big.width, big.height).data;
    for (let i = 0; i < g.height; i++) for (let j = 0; j < g.width; j++) {
      let s = 0;
      for (let u = 0; u < S; u++) for (let v = 0; v < S; v++) s += d[((i * S + u) * big.width + j * S + v) * 4];
      cells[i * g.width + j] = s / (S * S * 255);
    }
    if (META.fit === "mnist") centreByMass(cells, g.height, g.width);
  }
  const plane = g.height * g.width;
  const values = new Float32Array(g.channels * plane);
  for (let c = 0; c < g.channels; c++) for (let k = 0; k < plane; k++) values[c * plane + k] = cells[k] * META.pixel_max;
  return {values, cells};
}

function centreByMass(cells, H, W) {
  let m = 0, cy = 0, cx = 0;
  for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) { const v = cells[i * W + j]; m += v; cy += v * i; cx += v * j; }
  if (m <= 0) return;
  const dy = Math.round((H - 1) / 2 - cy / m), dx = Math.round((W - 1) / 2 - cx / m);
  const moved = new Float32Array(H * W);
  for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
    const si = i - dy, sj = j - dx;
    if (si >= 0 && si < H && sj >= 0 && sj < W) moved[i * W + j] = cells[si * W + sj];
  }
  cells.set(moved);
}

function drawStrokes(pad, strokes) {
  const ctx = pad.getContext("2d");
  ctx.strokeStyle = "#fff"; ctx.lineWidth = pad.width / 14; ctx.lineCap = "round"; ctx.lineJoin = "round";
  for (const stroke of strokes) {
    ctx.beginPath();
    stroke.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (stroke.length === 1) ctx.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    ctx.stroke();
  }
}

function clearPad(pad) {
  const ctx = pad.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height);
}

function showSeen(cells) {
  const g = META.image, seen = $("seen"), ctx = seen.getContext("2d");
  const cw = seen.width / g.width, ch = seen.height / g.height;
  for (let i = 0; i < g.height; i++) for (let j = 0; j < g.width; j++) {
    const v = Math.round(255 * Math.min(1, cells[i * g.width + j]));
    ctx.fillStyle = `rgb(${v},${v},${v})`;
    ctx.fillRect(j * cw, i * ch, Math.ceil(cw), Math.ceil(ch));
  }
}

function showBars(probs) {
  const labels = META.classes || probs.map((_, k) => String(k));
  const best = probs.indexOf(Math.max(...probs));
  $("bars").innerHTML = "";
  probs.forEach((p, k) => {
    const row = document.createElement("div");
    row.className = "bar" + (k === best ? " best" : "");
    row.innerHTML = `<span class="label"></span><span class="fill" style="width:${(p * 12).toFixed(2)}em"></span>` +
      `<span class="value">${(100 * p).toFixed(1)}%</span>`;
    row.querySelector(".label").textContent = labels[k];
    $("bars").appendChild(row);
  });
}

async function classifyPad() {
  const {values, cells} = padToInput($("pad"));
  showSeen(cells);
  const out = await runModel(values, inputShape(1));
  showBars(probabilities(out.data));
  return {values: Array.from(values), output: out.data};
}

function setupImage() {
  const pad = $("pad");
  clearPad(pad);
  let stroke = null, busy = false, again = false;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try { await classifyPad(); } catch (e) { fail(String(e)); }
    busy = false;
    if (again) { again = false; refresh(); }
  };
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  };
  pad.addEventListener("pointerdown", (e) => { stroke = [at(e)]; pad.setPointerCapture(e.pointerId); });
  pad.addEventListener("pointermove", (e) => {
    if (!stroke) return;
    stroke.push(at(e)); drawStrokes(pad, [stroke.slice(-2)]); refresh();
  });
  const end = () => { if (stroke) { drawStrokes(pad, [stroke]); stroke = null; refresh(); } };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointerleave", end);
  $("clear").addEventListener("click", () => { clearPad(pad); $("bars").innerHTML = ""; showSeen(new Float32Array(META.image.height * META.image.width)); });
}

// ---- character language model ---------------------------------------------------------------

function encode(text) {  // as `nngraph sample`: a character outside the vocabulary is an error
  const ids = [];
  for (const ch of text) {
    const k = META.vocab.indexOf(ch);
    if (k < 0) throw new Error(`'${ch}' is not in the model's vocabulary`);
    ids.push(k);
  }
  return ids;
}

async function nextScores(ids) {
  const fixed = Number.isInteger(META.shape[1]) ? META.shape[1] : null;
  let window = ids.slice(-META.context);
  if (fixed && window.length < fixed) window = Array(fixed - window.length).fill(window[0]).concat(window);
  const out = await runModel(window, [1, window.length]);
  const V = out.dims[out.dims.length - 1];
  return out.data.slice(out.data.length - V);
}

function draw(probs, u) {
  let acc = 0;
  for (let k = 0; k < probs.length; k++) { acc += probs[k]; if (u < acc) return k; }
  return probs.length - 1;
}

async function generate(prime, temperature, length, random = Math.random) {
  const ids = encode(prime);
  if (!ids.length) ids.push(META.vocab.indexOf("\n") >= 0 ? META.vocab.indexOf("\n") : 0);
  let text = prime;
  for (let n = 0; n < length; n++) {
    const scores = await nextScores(ids);
    const logits = META.probabilities ? scores.map((p) => Math.log(Math.max(p, 1e-30))) : scores;
    const k = draw(softmax(logits.map((x) => x / temperature)), random());
    ids.push(k);
    text += META.vocab[k];
    if (n % 10 === 9 || n === length - 1) { $("text").textContent = text; await new Promise((r) => setTimeout(r, 0)); }
  }
  return text;
}

function setupCharLM() {
  $("generate").addEventListener("click", async () => {
    const t = parseFloat($("temperature").value), n = parseInt($("length").value, 10);
    if (!(t > 0) || !(n > 0)) { fail("Temperature must be above 0 and length at least 1."); return; }
    $("generate").disabled = true;
    try { await generate($("prime").value, t, n); } catch (e) { fail(String(e)); }
    $("generate").disabled = false;
  });
}

// ---- any other model: one sample's numbers -----------------------------------------------------

function setupForm() {
  $("count").textContent = String(META.size);
  $("values").value = Array(META.size).fill("0").join(", ");
  $("run").addEventListener("click", async () => {
    const nums = $("values").value.split(/[\s,;]+/).filter((s) => s.length).map(Number);
    if (nums.length !== META.size || nums.some((v) => !Number.isFinite(v))) {
      $("result").textContent = `Expected ${META.size} finite numbers, got ${nums.length}.`;
      return;
    }
    const shape = [1].concat(META.shape.slice(1));
    const out = await runModel(nums, shape);
    $("result").textContent = `output ${JSON.stringify(out.dims)}:\n` + out.data.map((v) => v.toPrecision(6)).join(", ");
  });
}

// ---- self-test: ?selftest=1 runs selftest.json's fixed inputs and posts the outputs back ---------

function seeded(seed) {  // mulberry32: a fixed sequence of uniforms for a repeatable sample
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function selftest() {
  const spec = await (await fetch("selftest.json")).json();
  const result = {ok: true, version: ort.env.versions.web, kind: META.kind, cases: []};
  for (const c of spec.cases || []) result.cases.push(await runModel(c.values, c.shape));
  if (META.kind === "image" && spec.strokes) {
    drawStrokes($("pad"), spec.strokes);
    result.drawn = await classifyPad();
  }
  if (META.kind === "charlm" && spec.prime !== undefined) {
    result.text = await generate(spec.prime, spec.temperature || 1.0, spec.length || 20, seeded(spec.seed || 1));
  }
  return result;
}

async function post(result) {
  document.title = result.ok ? "nngraph: done" : "nngraph: failed";
  await fetch("/__result", {method: "POST", body: JSON.stringify(result)}).catch(() => {});
}

(async () => {
  const testing = new URLSearchParams(location.search).has("selftest");
  try {
    await init();
    if (testing) await post(await selftest());
  } catch (e) {
    const message = fail(String(e && e.message ? e.message : e));
    if (testing) await post({ok: false, error: message});
  }
})();
