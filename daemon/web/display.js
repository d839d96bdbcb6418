// Wall display client. Receives the public display state over a WebSocket (pushed on every
// change, heartbeat every 10 s), renders it with textContent only (never as HTML), sounds a
// gong (Web Audio) on each new call or recall, shows "connection lost" when the heartbeat
// stops and reconnects with backoff. Built to run for weeks: it keeps no growing state.
"use strict";

(function () {
  const HEARTBEAT_TIMEOUT_MS = 25000;
  const params = new URLSearchParams(window.location.search);
  const department = params.get("department");
  let socket = null;
  let lastMessageAt = 0;
  let backoffMs = 1000;
  let reconnectTimer = null;
  let lastCallSeq = null; // seq of the newest call shown; null before the first state
  let audio = null;

  const byId = (id) => document.getElementById(id);

  function setText(element, text) {
    if (element.textContent !== text) element.textContent = text;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function gong() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      const start = audio.currentTime + 0.02;
      [[659.25, 0], [523.25, 0.45]].forEach(([frequency, offset]) => {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        osc.type = "sine";
        osc.frequency.value = frequency;
        gain.gain.setValueAtTime(0.0001, start + offset);
        gain.gain.exponentialRampToValueAtTime(0.6, start + offset + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 1.4);
        osc.connect(gain).connect(audio.destination);
        osc.start(start + offset);
        osc.stop(start + offset + 1.5);
      });
      document.body.dataset.gongs = String(Number(document.body.dataset.gongs || 0) + 1);
    } catch (e) {
      // No audio device: the display still shows the call.
    }
  }

  function render(state) {
    setText(byId("site"), state.site || "");
    const calls = (state.calls || []).filter((c) => !department || c.department === department);
    const queues = (state.queues || []).filter((q) => !department || q.department === department);

    const current = byId("current-call");
    const newest = calls[0];
    if (newest) {
      current.classList.remove("empty");
      setText(current.querySelector(".ticket"), newest.ticket);
      setText(current.querySelector(".desk .de"), newest.desk_labels.de || newest.desk);
      setText(current.querySelector(".desk .en"), newest.desk_labels.en || "");
    } else {
      current.classList.add("empty");
      setText(current.querySelector(".ticket"), "–");
      setText(current.querySelector(".desk .de"), "");
      setText(current.querySelector(".desk .en"), "");
    }
    const newestSeq = newest ? newest.seq : 0;
    if (lastCallSeq !== null && newestSeq > lastCallSeq) {
      gong();
      current.classList.remove("flash");
      void current.offsetWidth; // restart the animation
      current.classList.add("flash");
    }
    lastCallSeq = newestSeq;

    const list = byId("calls");
    const items = calls.slice(1).map((c) => {
      const li = el("li", c.recall ? "recall" : "");
      li.appendChild(el("span", "ticket", c.ticket));
      li.appendChild(el("span", "desk", c.desk_labels.de || c.desk));
      return li;
    });
    list.replaceChildren(...items);

    const rows = queues.map((q) => {
      const tr = el("tr");
      const name = el("td", "service");
      name.appendChild(el("span", "de", q.name.de));
      name.appendChild(el("span", "en", q.name.en));
      tr.appendChild(name);
      tr.appendChild(el("td", "num waiting", String(q.waiting)));
      tr.appendChild(el("td", "num wait", q.waiting > 0 ? "≈ " + q.wait_minutes + " min" : "–"));
      return tr;
    });
    byId("queues").tBodies[0].replaceChildren(...rows);
    document.body.dataset.seq = String(state.seq || 0);
  }

  function setOnline(online) {
    byId("offline").hidden = online;
    document.body.dataset.online = online ? "yes" : "no";
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, backoffMs);
    backoffMs = Math.min(backoffMs * 2, 30000);
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + window.location.host + "/display/ws");
    socket = ws;
    ws.onopen = () => {
      lastMessageAt = Date.now();
      backoffMs = 1000;
    };
    ws.onmessage = (event) => {
      lastMessageAt = Date.now();
      setOnline(true);
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (typeof message.at === "number") serverOffsetMs = message.at - Date.now();
      if (message.type === "state") {
        setZone(message.state.time_zone);
        render(message.state);
        tick();
      }
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      setOnline(false);
      scheduleReconnect();
    };
    ws.onerror = () => ws.close();
  }

  // The clock shows the appliance's time in the site's time zone, whatever the browser's
  // clock and zone are: the heartbeat carries the appliance's time.
  let clockFormat = null;
  let clockZone = null;
  let serverOffsetMs = 0;

  function setZone(zone) {
    if (!zone || zone === clockZone) return;
    try {
      clockFormat = new Intl.DateTimeFormat("de-DE", { timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
      clockZone = zone;
    } catch (e) {
      clockFormat = null;
    }
  }

  function tick() {
    const now = new Date(Date.now() + serverOffsetMs);
    let text;
    if (clockFormat) {
      text = clockFormat.format(now);
    } else {
      text = String(now.getHours()).padStart(2, "0") + ":" + String(now.getMinutes()).padStart(2, "0");
    }
    setText(byId("clock"), text);
    if (socket && Date.now() - lastMessageAt > HEARTBEAT_TIMEOUT_MS) {
      // No heartbeat: the connection is dead even if the socket does not know yet.
      const dead = socket;
      socket = null;
      setOnline(false);
      dead.close();
      scheduleReconnect();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setOnline(false);
    tick();
    setInterval(tick, 1000);
    connect();
  });
})();
