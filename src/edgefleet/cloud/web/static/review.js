// edgefleet review queue: play the clip, show both outputs, send the verdict, show the next
// capture at once. Clips come from /ui/api/v1/clips/{id}; the next items' clips are fetched
// ahead into blob URLs so switching is instant. Keys: 1-4 or c/k/b/u verdict, n/p next and
// previous, space play/pause (ignored while typing a note; Esc leaves the note field).
// The correct-label picker offers the labels of the capture's models' manifests (data.labels
// and each queue page's labels, per model name:version); its value goes with the verdict as
// corrected_label, which the API checks against those manifests.
(function () {
  "use strict";
  var root = document.getElementById("review");
  var dataEl = document.getElementById("review-data");
  if (!root || !dataEl) { return; }
  var ef = window.edgefleet;
  var data = JSON.parse(dataEl.textContent);
  var items = data.items;
  var canLabel = root.dataset.canLabel === "true";
  var video = document.getElementById("clip");
  var noClip = document.getElementById("no-clip");
  var note = document.getElementById("note");
  var corrected = document.getElementById("corrected-label");
  var modelLabels = data.labels || {};  // "name:version" -> the manifest's class labels
  var blobs = {};   // clip id -> blob URL (prefetched)
  var pending = {}; // clip id -> true while fetching
  var current = -1;
  var moves = 0;    // counts show() calls: a late queue refill does not override a later move
  var fetching = false;
  var exhausted = false;
  var PREFETCH = 2;

  function clipUrl(id) { return "/ui/api/v1/clips/" + encodeURIComponent(id); }

  function prefetch(item) {
    if (!item || !item.clip_id || blobs[item.clip_id] || pending[item.clip_id]) { return; }
    pending[item.clip_id] = true;
    fetch(clipUrl(item.clip_id), { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.blob();
    }).then(function (b) { blobs[item.clip_id] = URL.createObjectURL(b); })
      .catch(function () { /* played from the URL instead */ })
      .then(function () { delete pending[item.clip_id]; });
  }

  function choices(it) {
    var out = [];
    [it.control, it.candidate].forEach(function (o) {
      ((o && o.model && modelLabels[o.model]) || []).forEach(function (l) { if (out.indexOf(l) < 0) { out.push(l); } });
    });
    return out;
  }

  function fillCorrected(it) {  // options built as text nodes: labels are never parsed as HTML
    if (!corrected) { return; }
    var have = it.label && it.label.corrected_label ? it.label.corrected_label : "";
    var labels = choices(it);
    if (have && labels.indexOf(have) < 0) { labels.push(have); }
    while (corrected.options.length > 1) { corrected.remove(1); }
    labels.forEach(function (l) { corrected.add(new Option(l, l)); });
    corrected.value = have;
    corrected.disabled = labels.length === 0;
    corrected.title = labels.length ? "" : "neither model of this capture is in the catalog";
  }

  function describeLabel(lab) {
    return "Labelled " + lab.verdict.replace("_", " ") + " by " + lab.reviewer +
      (lab.corrected_label ? " · correct label " + lab.corrected_label : "") + (lab.note ? ": " + lab.note : "");
  }

  function text(el, value) { el.textContent = value === null || value === undefined ? "-" : String(value); }
  function fmt(score) { return score === null || score === undefined ? "-" : Number(score).toFixed(2); }

  function renderOutput(id, out) {
    var box = document.getElementById(id);
    text(box.querySelector(".model"), out ? out.model : null);
    text(box.querySelector(".big"), out ? out.label : null);
    text(box.querySelector(".score"), out ? "score " + fmt(out.score) : null);
    var topk = box.querySelector(".topk");
    topk.innerHTML = "";
    if (!out || !out.scores || !out.scores.length) { return; }
    var ranked = out.scores.map(function (s, i) { return [s, i]; }).sort(function (a, b) { return b[0] - a[0]; }).slice(0, 3);
    ranked.forEach(function (r) {
      var row = document.createElement("div");
      row.className = "bar";
      var label = document.createElement("span");
      label.textContent = String(r[1]);
      var fill = document.createElement("i");
      fill.style.width = Math.round(r[0] * 100) + "%";
      var val = document.createElement("em");
      val.textContent = fmt(r[0]);
      row.appendChild(label); row.appendChild(fill); row.appendChild(val);
      topk.appendChild(row);
    });
  }

  function renderTable() {
    var tbody = document.querySelector("#queue tbody");
    if (!tbody) { return; }
    tbody.innerHTML = "";
    items.forEach(function (it, i) {
      var tr = document.createElement("tr");
      tr.dataset.event = it.event_id;
      if (i === current) { tr.className = "current"; }
      if (it.label) { tr.className += " labelled"; }
      var cand = it.candidate ? it.candidate.label + " " + fmt(it.candidate.score) : "-";
      [new Date(it.ts).toISOString().replace("T", " ").slice(0, 19), it.device_id,
       it.trigger + (it.campaign ? " " + it.campaign : ""),
       it.control.label + " " + fmt(it.control.score), cand, it.clip_id ? "yes" : "-",
       it.label ? it.label.verdict : "-",
       it.label && it.label.corrected_label ? it.label.corrected_label : "-"].forEach(function (v, k) {
        var td = document.createElement("td");
        td.textContent = v;
        if (k === 6) { td.className = "verdict-cell"; }
        if (k === 7) { td.className = "corrected-cell"; }
        tr.appendChild(td);
      });
      tr.addEventListener("click", function () { show(i); });
      tbody.appendChild(tr);
    });
  }

  function show(i) {
    if (i < 0 || i >= items.length) { return; }
    current = i;
    moves++;
    var it = items[i];
    root.dataset.event = it.event_id;
    var meta = document.getElementById("item-meta");
    meta.innerHTML = "";
    var facts = [["device", it.device_id], ["time", it.ts], ["trigger", it.trigger], ["event", it.event_id]];
    if (it.campaign) { facts.push(["campaign", it.campaign]); }
    if (it.context) {  // the application's per-frame context: device-supplied, shown as text only
      facts.push(["context", Object.keys(it.context).map(function (k) { return k + "=" + it.context[k]; }).join(", ")]);
    }
    facts.forEach(function (p) {
      var s = document.createElement("span");
      s.innerHTML = "<b></b> ";
      s.firstChild.textContent = p[0];
      s.appendChild(document.createTextNode(p[1]));
      meta.appendChild(s);
    });
    renderOutput("out-control", it.control);
    renderOutput("out-candidate", it.candidate);
    var lab = document.getElementById("current-label");
    lab.textContent = it.label ? describeLabel(it.label) : "Not labelled yet.";
    if (note) { note.value = it.label ? it.label.note : ""; }
    fillCorrected(it);
    if (it.clip_id) {
      noClip.hidden = true;
      video.hidden = false;
      video.poster = clipUrl(it.clip_id) + "/keyframe";
      video.src = blobs[it.clip_id] || clipUrl(it.clip_id);
      var p = video.play();
      if (p && p.catch) { p.catch(function () { /* autoplay refused: space plays */ }); }
    } else {
      video.removeAttribute("src");
      video.load();
      video.hidden = true;
      noClip.hidden = false;
    }
    for (var k = 1; k <= PREFETCH; k++) { prefetch(items[i + k]); }
    renderTable();
    refill();
  }

  function nextUnlabelled(from) {
    for (var j = from + 1; j < items.length; j++) { if (!items[j].label) { return j; } }
    return -1;
  }

  function refill() {
    var left = 0;
    for (var j = current + 1; j < items.length; j++) { if (!items[j].label) { left++; } }
    if (left > PREFETCH || fetching || exhausted) { return Promise.resolve(); }
    fetching = true;
    var q = data.query ? data.query + "&" : "";
    q += "unlabelled=true&limit=" + data.page_items;
    items.forEach(function (it) { q += "&exclude=" + encodeURIComponent(it.event_id); });
    return ef.send("GET", "/v1/review/queue?" + q).then(function (res) {
      fetching = false;
      if (!res.ok) { return; }
      var known = {};
      items.forEach(function (it) { known[it.event_id] = true; });
      Object.keys(res.data.labels || {}).forEach(function (m) { modelLabels[m] = res.data.labels[m]; });
      var fresh = res.data.items.filter(function (it) { return !known[it.event_id]; });
      if (!fresh.length) { exhausted = true; return; }
      items = items.concat(fresh);
      for (var k = 1; k <= PREFETCH; k++) { prefetch(items[current + k]); }
      renderTable();
    }, function () { fetching = false; });
  }

  function setCounts(verdict, delta, previous) {
    var c = document.querySelector("[data-count=" + verdict + "]");
    if (c) { c.textContent = String(Number(c.textContent) + delta); }
    if (previous) {
      var p = document.querySelector("[data-count=" + previous + "]");
      if (p) { p.textContent = String(Number(p.textContent) - 1); }
    } else {
      var u = document.getElementById("count-unlabelled");
      u.textContent = String(Math.max(0, Number(u.textContent) - delta));
    }
  }

  function advance() {
    var j = nextUnlabelled(current);
    if (j >= 0) { show(j); return; }
    var seen = moves;
    refill().then(function () {
      if (moves !== seen) { return; }  // moved meanwhile (e.g. back to a refused label): keep its message
      var k = nextUnlabelled(current);
      if (k >= 0) { show(k); } else { renderTable(); ef.flash("Queue done: nothing unlabelled left in this filter."); }
    });
  }

  function label(verdict) {
    if (!canLabel || current < 0) { return; }
    var it = items[current];
    var before = it.label;
    var previous = before ? before.verdict : null;
    var body = { verdict: verdict, note: note ? note.value : "", device_id: it.device_id };
    if (corrected && corrected.value) { body.corrected_label = corrected.value; }
    it.label = { verdict: verdict, note: body.note, reviewer: "you", labelled_at: null,
                 corrected_label: body.corrected_label || null };
    setCounts(verdict, 1, previous);
    var at = current;
    advance(); // the next item shows at once; the verdict is sent meanwhile
    ef.send("POST", "/v1/review/" + encodeURIComponent(it.event_id) + "/label", body).then(function (res) {
      if (res.ok) {
        it.label = res.data.label;
        root.dataset.labelled = String(Number(root.dataset.labelled || 0) + 1);
        document.dispatchEvent(new CustomEvent("edgefleet:labelled", { detail: res.data }));
        renderTable();
        return;
      }
      undo();
      var d = res.data && res.data.detail !== undefined ? res.data.detail : res.data;
      ef.flash("Label not saved (HTTP " + res.status + "): " + (typeof d === "string" ? d : JSON.stringify(d)), true);
      show(at);
    }, function (err) { undo(); ef.flash(String(err), true); show(at); });

    function undo() {  // the capture keeps the label it had before (if any)
      it.label = before;
      if (previous) { setCounts(previous, 1, verdict); } else { setCounts(verdict, -1, null); }
    }
  }

  var KEYS = { "1": "control_right", "c": "control_right", "2": "candidate_right", "k": "candidate_right",
               "3": "both_wrong", "b": "both_wrong", "4": "unclear", "u": "unclear" };

  document.addEventListener("keydown", function (ev) {
    var tag = (ev.target && ev.target.tagName) || "";
    if (tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT") {
      if (ev.key === "Escape") { ev.target.blur(); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var key = ev.key.toLowerCase();
    if (key === " " || key === "spacebar") {
      ev.preventDefault();
      if (video.hidden) { return; }
      if (video.paused) { video.play(); } else { video.pause(); }
    } else if (key === "n") {
      ev.preventDefault();
      if (current + 1 < items.length) { show(current + 1); } else { refill().then(function () { show(current + 1); }); }
    } else if (key === "p") {
      ev.preventDefault();
      show(current - 1);
    } else if (KEYS[key] && canLabel) {
      ev.preventDefault();
      label(KEYS[key]);
    }
  });

  root.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-verdict]");
    if (b) { b.blur(); label(b.dataset.verdict); }
  });
  if (corrected) {  // picked: leave the field so the verdict keys work again
    corrected.addEventListener("change", function () { corrected.blur(); });
  }
  document.getElementById("next").addEventListener("click", function (ev) {
    ev.currentTarget.blur();
    if (current + 1 < items.length) { show(current + 1); } else { refill().then(function () { show(current + 1); }); }
  });
  document.getElementById("prev").addEventListener("click", function (ev) { ev.currentTarget.blur(); show(current - 1); });

  window.edgefleetReview = { items: function () { return items; }, current: function () { return current; } };
  if (items.length) {
    var first = data.show === "unlabelled" ? 0 : nextUnlabelled(-1);
    show(first >= 0 ? first : 0);
  }
})();
