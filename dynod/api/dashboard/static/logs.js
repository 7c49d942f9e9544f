// The live log tail: poll the app's lines after the last position shown, once a second.
"use strict";
(function () {
  const pre = document.getElementById("log");
  const source = pre.dataset.source;
  let after = "";
  async function poll() {
    try {
      const reply = await fetch(source + (after ? "?after=" + encodeURIComponent(after) : ""),
                                { credentials: "same-origin" });
      if (reply.ok) {
        const body = await reply.json();
        const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        for (const line of body.lines) pre.append(line + "\n");
        after = body.position || after;
        if (stick) pre.scrollTop = pre.scrollHeight;
      } else if (reply.status === 401) {
        pre.append("-- signed out: reload the page to sign in again --\n");
        return;
      }
    } catch (e) { /* the daemon restarted: try again */ }
    setTimeout(poll, 1000);
  }
  poll();
})();
