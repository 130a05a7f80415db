// The search page: text queries as JSON, dropped files as multipart, results with thumbnails, audio players,
// text snippets and scores. Plain DOM, no framework: it ships inside the Python package.
const $ = (id) => document.getElementById(id);

// With API keys configured, every call carries the key: asked for once, kept for this browser session only.
async function call(path, init = {}) {
  const withKey = () => {
    const key = sessionStorage.getItem("embedstream-key");
    const headers = { ...(init.headers || {}), ...(key ? { authorization: `Bearer ${key}` } : {}) };
    return fetch(path, { ...init, headers });
  };
  let response = await withKey();
  if (response.status === 401) {
    const key = window.prompt("This search needs an API key:");
    if (key) {
      sessionStorage.setItem("embedstream-key", key.trim());
      response = await withKey();
    }
  }
  return response;
}

async function loadSpaces() {
  const response = await call("/spaces");
  const body = await response.json();
  if (!response.ok) { $("stats").textContent = body.detail; return; }
  $("stats").textContent = `${body.points} points in ${body.collection}`;
  for (const space of body.spaces) {
    const option = document.createElement("option");
    option.value = space.name;
    option.textContent = `${space.name} (${space.dim}-d, ${space.points})`;
    $("space").appendChild(option);
  }
}

function options() {
  const out = { k: 12 };
  if ($("space").value) out.space = $("space").value;
  if ($("modality").value) out.modality = $("modality").value;
  return out;
}

async function run(request, path = "/search") {
  $("status").textContent = "searching…";
  const response = await call(path, request);
  const body = await response.json();
  if (!response.ok) {
    $("status").textContent = body.reason ? `${body.detail} (${body.reason})` : body.detail;
    $("results").replaceChildren();
    return;
  }
  const found = body.documents || body.hits;
  $("status").textContent = found.length ? "" : "no results";
  if (body.documents) renderDocuments(body); else render(body);
}

function searchText(text) {
  const mode = $("mode").value || undefined;  // none chosen: the server's default (api.search_mode)
  const byDocument = $("documents").checked;
  return run({ method: "POST", headers: { "content-type": "application/json" },
               body: JSON.stringify({ text, mode, ...options(), ...(byDocument ? { k: 8 } : {}) }) },
             byDocument ? "/search/documents" : "/search");
}

// A passage shown where it sits in its document: some text before it, the passage marked, some after.
function located(documentText, passage, context = 90, longest = 420) {
  const p = passage.payload, out = document.createElement("p");
  out.className = "snippet";
  if (typeof documentText !== "string" || p.start == null) { out.textContent = p.text || ""; return out; }
  const before = documentText.slice(Math.max(0, p.start - context), p.start);
  const body = documentText.slice(p.start, p.end);
  const after = documentText.slice(p.end, p.end + context);
  const mark = document.createElement("mark");
  mark.textContent = body.length > longest ? body.slice(0, longest) + "…" : body;
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = ` chars ${p.start}–${p.end} · ${passage.score.toFixed(3)}`;
  out.append((p.start > context ? "…" : "") + before, mark, after + "…", where);
  return out;
}

// A result's list item, its score first.
function hitItem(id, value, className) {
  const li = document.createElement("li");
  li.className = className;
  li.dataset.id = id;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = value.toFixed(3);
  li.appendChild(score);
  return li;
}

function renderDocuments(body) {
  const items = body.documents.map((doc) => {
    const p = doc.payload || {};
    const li = hitItem(doc.point_id, doc.score, "hit document");
    const text = document.createElement("div");
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = doc.kind + (p.chunks ? ` · ${p.chunks} chunk points` : "");
    const title = document.createElement("strong");
    title.textContent = doc.id;
    text.append(kind, title);
    if (doc.passages.length) {
      for (const passage of doc.passages) text.appendChild(located(p.text, passage));
    } else if (p.text) {
      const snippet = document.createElement("p");
      snippet.className = "snippet";
      snippet.textContent = p.text.length > 280 ? p.text.slice(0, 280) + "…" : p.text;
      text.appendChild(snippet);
    }
    li.appendChild(text);
    return li;
  });
  $("results").replaceChildren(...items);
}

function searchPoint(pointId, space) {
  return run({ method: "POST", headers: { "content-type": "application/json" },
               body: JSON.stringify({ point_id: pointId, ...options(), space }) });
}

function searchFile(file) {
  const form = new FormData();
  form.append("file", file);
  form.append("kind", file.type.startsWith("audio") ? "audio" : "image");
  for (const [key, value] of Object.entries(options())) form.append(key, value);
  return run({ method: "POST", body: form }, "/search/file");
}

function render(body) {
  const items = body.hits.map((hit) => {
    const p = hit.payload, media = p.media || {};
    const li = hitItem(hit.id, hit.score, "hit");
    if (media.thumbnail) {
      const img = document.createElement("img");
      img.src = media.thumbnail;
      img.alt = p.id;
      li.appendChild(img);
    }
    const text = document.createElement("div");
    const kind = document.createElement("span");
    kind.className = "kind";
    const where = hit.document;  // a chunk of a long text: its document and characters there
    kind.textContent = where ? `${where.level} of document · chars ${where.start}–${where.end}` : p.modality;
    const title = document.createElement("strong");
    title.textContent = where ? where.id : p.id;
    text.append(kind, title);
    if (p.text) {
      const snippet = document.createElement("p");
      snippet.className = "snippet";
      snippet.textContent = p.text.length > 280 ? p.text.slice(0, 280) + "…" : p.text;
      text.appendChild(snippet);
    }
    if (media.preview) {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.src = media.preview;
      text.appendChild(audio);
    }
    const more = document.createElement("a");
    more.href = "#";
    more.className = "more";
    more.textContent = " more like this";
    more.addEventListener("click", (event) => { event.preventDefault(); searchPoint(hit.id, body.space); });
    text.appendChild(more);
    li.appendChild(text);
    return li;
  });
  $("results").replaceChildren(...items);
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("query").value.trim();
  if (text) searchText(text);
});
$("file").addEventListener("change", () => { if ($("file").files[0]) searchFile($("file").files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) searchFile(event.dataTransfer.files[0]);
});
loadSpaces();
