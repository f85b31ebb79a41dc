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

  // ---- home: the live calls list -------------------------------------------------------------
  function callItem(call) {
    var li = el("li");
    li.dataset.uuid = call.uuid;
    var a = el("a", null, call.caller || "unknown caller");
    a.href = prefix + "/calls/" + encodeURIComponent(call.uuid);
    li.appendChild(a);
    li.appendChild(document.createTextNode(" · " + (call.flow || "") + " · "));
    li.appendChild(el("span", "call-state", call.ended ? "ended" : (call.state || "")));
    return li;
  }

  function homePage() {
    var list = document.getElementById("live-calls");
    var empty = document.getElementById("no-calls");
    function find(uuid) {
      return list.querySelector('li[data-uuid="' + CSS.escape(uuid) + '"]');
    }
    function refreshEmpty() { empty.hidden = list.children.length > 0; }
    connect("", function (ev) {
      if (ev.type === "hello") {
        list.textContent = "";
        ev.calls.forEach(function (c) { list.appendChild(callItem(c)); });
      } else if (ev.type === "call_started") {
        var old = find(ev.uuid);
        if (old) { old.remove(); }
        list.insertBefore(callItem(ev.call), list.firstChild);
      } else if (ev.type === "state" || ev.type === "call_ended") {
        var li = find(ev.uuid);
        if (li) {
          li.querySelector(".call-state").textContent =
            ev.type === "state" ? ev.state : "ended" + (ev.outcome ? " (" + ev.outcome + ")" : "");
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
        if (node.scrollIntoView) { node.scrollIntoView({block: "nearest", inline: "nearest"}); }
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
        if (dts[i].textContent === name) { dts[i].nextElementSibling.textContent = String(value); return; }
      }
      slots.appendChild(el("dt", null, name));
      slots.appendChild(el("dd", null, String(value)));
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
