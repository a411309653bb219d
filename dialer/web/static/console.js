// Times in the viewer's zone: the server writes UTC into <time datetime> and data-since; this rewrites them.
"use strict";
(function () {
  const pad = (n) => String(n).padStart(2, "0");
  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function span(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return (h ? h + ":" + pad(m) : m) + ":" + pad(s);
  }
  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach((el) => {
      const d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.textContent = clock(d); el.title = d.toString(); }
    });
    root.querySelectorAll("text[data-time]").forEach((el) => {
      const d = new Date(el.getAttribute("data-time"));
      if (!isNaN(d)) { el.textContent = pad(d.getHours()); }
    });
  }
  function tick() {
    const now = Date.now();
    document.querySelectorAll(".elapsed[data-since]").forEach((el) => {
      const since = Date.parse(el.dataset.since);
      if (!isNaN(since)) { el.textContent = span((now - since) / 1000); }
    });
  }
  window.consoleTime = { clock, span, localise, tick };
  document.addEventListener("DOMContentLoaded", () => {
    localise(document);
    tick();
    setInterval(tick, 1000);
  });
})();
