// flowagent web UI: live updates over one WebSocket. Plain script, no libraries, no build step.
// Every page works without it; this only keeps lists, the transcript and the diagram current.
(function () {
  "use strict";
  var data = {};
  try { data = JSON.parse(document.getElementById("page-data").textContent || "{}"); } catch (e) {}
  var prefix = data.prefix || "";

  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) { n.className = cls; }
    if (text !== undefined) { n.textContent = text; }
    return n;
  }

  function connect(query, onEvent) {
    var delay = 500;
    function open() {
      var proto = location.protocol === "https:" ? "wss:" : "ws:";
      var ws = new WebSocket(proto + "//" + location.host + prefix + "/ws" + (query || ""));
      ws.onopen = function () { delay = 500; document.body.dataset.live = "connected"; };
      ws.onmessage = function (m) {
        var ev;
        try { ev = JSON.parse(m.data); } catch (e) { return; }
        onEvent(ev);
      };
      ws.onclose = function () {
        document.body.dataset.live = "reconnecting";
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
  }

  // ---- home: live calls, and the ones that ended since the server started -----------------
  function callItem(call) {
    var li = el("li");
    li.dataset.uuid = call.uuid;
    var a = el("a", null, call.caller || "unknown caller");
    a.href = prefix + "/calls/" + encodeURIComponent(call.uuid);
    li.appendChild(a);
    li.appendChild(document.createTextNode(" · " + (call.flow || "") + " · "));
    var started = call.started_at ? new Date(call.started_at * 1000).toTimeString().slice(0, 8) : "";
    li.appendChild(el("span", "call-started", started));
    li.appendChild(document.createTextNode(" · "));
    li.appendChild(el("span", "muted call-id", String(call.uuid).slice(0, 8)));
    li.appendChild(document.createTextNode(" · "));
    li.appendChild(el("span", "call-state", call.ended ?
      "ended" + (call.outcome ? " (" + call.outcome + ")" : "") : (call.state || "")));
    return li;
  }

  function homePage() {
    var list = document.getElementById("live-calls");
    var empty = document.getElementById("no-calls");
    var recent = document.getElementById("recent-calls");
    var noRecent = document.getElementById("no-recent");
    function find(uuid) {
      return document.querySelector('#live-calls li[data-uuid="' + CSS.escape(uuid) + '"], ' +
                                    '#recent-calls li[data-uuid="' + CSS.escape(uuid) + '"]');
    }
    function refreshEmpty() {
      empty.hidden = list.children.length > 0;
      noRecent.hidden = recent.children.length > 0;
    }
    connect("", function (ev) {
      if (ev.type === "hello") {
        list.textContent = "";
        recent.textContent = "";
        ev.calls.forEach(function (c) { (c.ended ? recent : list).appendChild(callItem(c)); });
      } else if (ev.type === "call_started") {
        var old = find(ev.uuid);
        if (old) { old.remove(); }
        list.insertBefore(callItem(ev.call), list.firstChild);
      } else if (ev.type === "state") {
        var li = find(ev.uuid);
        if (li && li.parentNode === list) { li.querySelector(".call-state").textContent = ev.state; }
      } else if (ev.type === "call_ended") {
        var done = find(ev.uuid);
        if (done) {
          done.querySelector(".call-state").textContent =
            "ended" + (ev.outcome ? " (" + ev.outcome + ")" : "");
          recent.insertBefore(done, recent.firstChild);  // out of "Live calls"
        }
      }
      refreshEmpty();
    });
  }

  // ---- one call: diagram, transcript, slots, latency -----------------------------------------
  function callPage() {
    var stateEl = document.getElementById("current-state");
    var transcript = document.getElementById("transcript");
    var slots = document.getElementById("slots");
    var latency = document.getElementById("latency");
    var statusEl = document.getElementById("call-status");

    // Bring the current state into view inside the diagram's own scroll box only: the page
    // itself must not move (scrollIntoView scrolled the whole page down, header out of view).
    function showInBox(node) {
      var box = node.closest(".graph-scroll");
      if (!box) { return; }
      var b = box.getBoundingClientRect(), r = node.getBoundingClientRect();
      if (r.left < b.left || r.right > b.right) {
        box.scrollLeft += (r.left - b.left) - (b.width - r.width) / 2;
      }
      if (r.top < b.top || r.bottom > b.bottom) {
        box.scrollTop += (r.top - b.top) - (b.height - r.height) / 2;
      }
    }
    function text(value) {  // JSON's spelling, as the server writes slots (true, not True)
      return value !== null && typeof value === "object" ? JSON.stringify(value) : String(value);
    }
    function highlight(state) {
      stateEl.textContent = state || "";
      document.querySelectorAll(".flow-graph .node.current").forEach(function (n) {
        n.classList.remove("current");
        n.classList.add("visited");
        n.removeAttribute("aria-current");
      });
      if (!state) { return; }
      var node = document.querySelector('.flow-graph .node[data-state="' + CSS.escape(state) + '"]');
      if (node) {
        node.classList.add("current");
        node.setAttribute("aria-current", "step");
        showInBox(node);
      }
    }
    function addLine(line) {
      var li = el("li", "who-" + line.who);
      li.appendChild(el("span", "who", line.who));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "text", line.text));
      transcript.appendChild(li);
    }
    function setSlot(name, value) {
      var dts = slots.querySelectorAll("dt");
      for (var i = 0; i < dts.length; i++) {
        if (dts[i].textContent === name) { dts[i].nextElementSibling.textContent = text(value); return; }
      }
      slots.appendChild(el("dt", null, name));
      slots.appendChild(el("dd", null, text(value)));
    }
    function addLatency(e) {
      var tr = el("tr");
      [e.turn, e.state || "", e.ms].forEach(function (v) { tr.appendChild(el("td", null, String(v))); });
      latency.appendChild(tr);
    }
    function ended(outcome) {
      statusEl.textContent = "ended" + (outcome ? " (" + outcome + ")" : "");
    }
    (data.visited || []).forEach(function (s) { highlight(s); });
    highlight(data.state);
    connect("?call=" + encodeURIComponent(data.uuid), function (ev) {
      if (ev.type === "hello" && ev.calls.length) {
        var c = ev.calls[0];
        transcript.textContent = ""; slots.textContent = ""; latency.textContent = "";
        c.transcript.forEach(addLine);
        Object.keys(c.slots).forEach(function (k) { setSlot(k, c.slots[k]); });
        c.latency.forEach(addLatency);
        highlight(c.state);
        if (c.ended) { ended(c.outcome); }
      } else if (ev.type === "state") { highlight(ev.state); }
      else if (ev.type === "transcript") { addLine(ev.line); }
      else if (ev.type === "slot") { setSlot(ev.name, ev.value); }
      else if (ev.type === "latency") { addLatency(ev.entry); }
      else if (ev.type === "call_ended") { ended(ev.outcome); }
    });
  }

  // ---- a flow: run its conversation tests without leaving the page ---------------------------
  function flowPage() {
    var form = document.getElementById("run-tests");
    if (!form) { return; }
    var out = document.getElementById("test-results");
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var button = form.querySelector("button");
      button.disabled = true;
      out.setAttribute("aria-busy", "true");
      out.textContent = "Running the tests…";
      fetch(form.action, {method: "POST", headers: {"Accept": "application/json"},
                          credentials: "same-origin"})
        .then(function (r) { return r.json(); })
        .then(function (j) { out.innerHTML = j.html; })  // server-escaped HTML
        .catch(function (err) { out.textContent = "The tests could not run: " + err; })
        .finally(function () { button.disabled = false; out.removeAttribute("aria-busy"); });
    });
  }

  if (data.page === "home") { homePage(); }
  else if (data.page === "call") { callPage(); }
  else if (data.page === "flow") { flowPage(); }
})();
