// The agent desk's live parts: the call record when a call is routed (the agent's event feed), the call and
// wrap-up timer, and the disposition hotkeys (1-9) when the focus is not in a text field.
"use strict";
(function () {
  const labels = { ready: "ready", paused: "paused", ringing: "ringing", talking: "talking", wrapup: "wrap-up",
    logged_out: "logged out" };
  let timer = null;

  function showState(st) {
    const el = document.getElementById("state");
    if (!el) { return; }
    el.dataset.state = st.state;
    el.className = "badge state-" + st.state;
    el.textContent = (labels[st.state] || st.state) + (st.pause_code ? ": " + st.pause_code : "");
    timer = { since: Date.parse(st.since), until: st.wrapup_until ? Date.parse(st.wrapup_until) : null };
    drawTimer();
  }

  function drawTimer() {
    const el = document.getElementById("timer");
    if (!el) { return; }
    if (!timer) {
      timer = { since: Date.parse(el.dataset.since), until: el.dataset.until ? Date.parse(el.dataset.until) : null };
    }
    const now = Date.now();
    if (timer.until) {
      el.textContent = "wrap-up " + window.consoleTime.span((timer.until - now) / 1000) + " left";
    } else if (!isNaN(timer.since)) {
      el.textContent = window.consoleTime.span((now - timer.since) / 1000);
    }
  }

  async function loadCall(attemptId) {
    const call = document.getElementById("call");
    const shown = call.querySelector("[data-attempt]");
    if (shown && shown.dataset.attempt === String(attemptId)) { return; }
    const r = await fetch("/agent/panel", { credentials: "same-origin" });
    if (r.status === 401) { window.location = "/agent/login"; return; }
    if (!r.ok) { return; }
    call.innerHTML = await r.text();
    window.consoleTime.localise(call);
    const first = call.querySelector(".codes button");
    if (first) { call.focus(); }
  }

  function hotkey(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    const t = e.target;
    if (t && t.id === "callback-at" && e.key === "Enter") {
      const cb = document.querySelector('#disposition button[data-meaning="callback"]');
      if (cb) { e.preventDefault(); document.getElementById("disposition").requestSubmit(cb); }
      return;
    }
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
              (t.tagName === "INPUT" && t.type !== "checkbox" && t.type !== "radio"))) {
      if (e.key === "Escape") { t.blur(); }
      return;
    }
    if (!/^[1-9]$/.test(e.key)) { return; }
    const form = document.getElementById("disposition");
    if (!form) { return; }
    const button = form.querySelector('button[data-hotkey="' + e.key + '"]');
    if (!button) { return; }
    e.preventDefault();
    const picker = document.getElementById("callback-at");
    if (button.dataset.meaning === "callback" && picker && !picker.value) {
      picker.focus();
      return;
    }
    form.requestSubmit(button);
  }

  document.addEventListener("DOMContentLoaded", () => {
    drawTimer();
    setInterval(drawTimer, 1000);
    document.addEventListener("keydown", hotkey);
    document.getElementById("call").setAttribute("tabindex", "-1");
    if (!window.EventSource) { return; }
    const source = new EventSource("/agent/events");
    source.addEventListener("state", (e) => showState(JSON.parse(e.data).state));
    source.addEventListener("call", (e) => loadCall(JSON.parse(e.data).attempt_id));
    source.addEventListener("wrapup_timer", (e) => {
      const d = JSON.parse(e.data);
      timer = { since: Date.now(), until: Date.parse(d.until) };
      drawTimer();
    });
    source.addEventListener("end", () => { source.close(); window.location = "/agent/login"; });
  });
})();
