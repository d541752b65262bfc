// edgefleet UI: the one script. Action buttons ([data-action]) send their request through
// /ui/api (the real API, with the HttpOnly cookie's token) and show the answer.
// A button: data-method, data-path (under /ui/api), optional data-body (JSON),
// data-form (id of a form whose fields become the JSON body), data-confirm (question).
(function () {
  "use strict";

  function flash(text, isError) {
    var el = document.getElementById("flash");
    if (!el) { return; }
    el.textContent = text;
    el.className = "flash" + (isError ? " error" : "");
    el.hidden = false;
  }

  function formBody(form) {
    var body = {};
    var devices = [];
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled) { return; }
      if (el.type === "checkbox") {
        if (el.name === "device") { if (el.checked) { devices.push(el.value); } return; }
        body[el.name] = el.checked;
        return;
      }
      body[el.name] = el.value;
    });
    if (form.querySelector("[name=device]")) { body.devices = devices; }
    return body;
  }

  function send(method, path, body) {
    var init = { method: method, credentials: "same-origin",
                 headers: { "Accept": "application/json", "X-Edgefleet-Request": "1" } };
    if (body !== undefined && method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch("/ui/api" + path, init).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
        return { ok: resp.ok, status: resp.status, data: data };
      });
    });
  }

  function describe(res) {
    if (!res.ok) {
      var d = res.data && res.data.detail !== undefined ? res.data.detail : res.data;
      return "HTTP " + res.status + ": " + (typeof d === "string" ? d : JSON.stringify(d));
    }
    if (res.data && res.data.token) {
      return "Token created for " + res.data.name + " (" + res.data.role + "). Copy it now; it is not shown again:\n" + res.data.token;
    }
    if (res.data && res.data.devices) {
      return res.data.model + " assigned to the " + res.data.slot + " slot of " + res.data.devices.length + " device(s).";
    }
    return "Done.";
  }

  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest("[data-action]");
    if (!btn) { return; }
    ev.preventDefault();
    if (btn.dataset.confirm && !window.confirm(btn.dataset.confirm)) { return; }
    var body;
    if (btn.dataset.form) { body = formBody(document.getElementById(btn.dataset.form)); }
    else if (btn.dataset.body) { body = JSON.parse(btn.dataset.body); }
    btn.disabled = true;
    send(btn.dataset.method || "POST", btn.dataset.path, body).then(function (res) {
      flash(describe(res), !res.ok);
      btn.disabled = false;
      document.dispatchEvent(new CustomEvent("edgefleet:action", { detail: { button: btn, result: res } }));
      if (res.ok && !(res.data && res.data.token) && btn.dataset.reload !== "false") {
        window.setTimeout(function () { window.location.reload(); }, 1200);
      }
    }, function (err) { flash(String(err), true); btn.disabled = false; });
  });

  document.addEventListener("change", function (ev) {
    var all = ev.target.closest("[data-check-all]");
    if (all) {
      document.querySelectorAll("input[name=" + all.dataset.checkAll + "]").forEach(function (c) { c.checked = all.checked; });
    }
  });

  // Pages carry no inline handlers or style attributes (the Content-Security-Policy forbids
  // them): forms marked data-inert never submit (their buttons act through data-action),
  // bars take their width from data-progress (percent), cells their colour from data-bg.
  document.addEventListener("submit", function (ev) {
    if (ev.target.closest("form[data-inert]")) { ev.preventDefault(); }
  });

  var COLOR = /^(#[0-9a-f]{3,8}|rgba?\([0-9., ]+\))$/i;
  function applyStyles(root) {
    root.querySelectorAll("[data-progress]").forEach(function (el) {
      var bar = el.querySelector("i");
      var v = Math.max(0, Math.min(100, Number(el.dataset.progress) || 0));
      if (bar) { bar.style.width = v + "%"; }
    });
    root.querySelectorAll("[data-bg]").forEach(function (el) {
      if (COLOR.test(el.dataset.bg)) { el.style.backgroundColor = el.dataset.bg; }
    });
  }
  applyStyles(document);

  // Shared with pages added later (review queue keyboard shortcuts etc.).
  window.edgefleet = { send: send, flash: flash, applyStyles: applyStyles };
})();
