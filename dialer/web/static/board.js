// The wallboard's live part: the server pushes the whole fragment when it changes (server-sent events).
"use strict";
(function () {
  document.addEventListener("DOMContentLoaded", () => {
    const live = document.getElementById("live");
    if (!live || !window.EventSource) { return; }
    const source = new EventSource("/board/events");
    source.addEventListener("board", (e) => {
      live.innerHTML = e.data;
      window.consoleTime.localise(live);
      window.consoleTime.tick();
      live.dataset.updated = String(Date.now());
    });
    source.onerror = () => { live.classList.add("stale"); };
    source.onopen = () => { live.classList.remove("stale"); };
  });
})();
