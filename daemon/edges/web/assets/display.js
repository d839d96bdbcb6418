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
  let lastState = null;

  // Soft hyphens at the syllable breaks of the catalog's long words (/api/v1/hyphenation):
  // Chromium on the appliance has no hyphenation dictionaries of its own.
  let hyphenation = { de: {}, en: {} };
  function hyphenate(text, lang) {
    const words = hyphenation[lang] || {};
    return String(text || "").replace(/\p{L}+/gu, (word) => words[word] || word);
  }
  async function loadHyphenation() {
    try {
      const response = await fetch("/api/v1/hyphenation", { credentials: "same-origin" });
      if (response.ok) hyphenation = await response.json();
    } catch (e) {
      return false;
    }
    if (lastState) render(lastState);
    return true;
  }

  function setText(element, text) {
    if (element.textContent !== text) element.textContent = text;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function inLanguage(tag, className, lang, text) {
    const node = el(tag, className, hyphenate(text, lang));
    node.lang = lang;
    return node;
  }

  // Whether a box shows all of its content (nothing scrolled away or cut off).
  function fits(box) {
    return box.scrollHeight <= box.clientHeight + 1 && box.scrollWidth <= box.clientWidth + 1;
  }

  // Shrinks a scale (a CSS variable) in 5 % steps until `ok()` or the minimum.
  function shrink(variable, ok, minimum) {
    const root = document.documentElement.style;
    let scale = 1;
    root.setProperty(variable, "1");
    while (!ok() && scale > minimum) {
      scale = Math.round((scale - 0.05) * 100) / 100;
      root.setProperty(variable, String(scale));
    }
  }

  // Makes everything fit the screen: the current call shrinks if its desk label is long, the
  // waiting table shrinks until every service is whole, and the recent calls lose their oldest
  // rows (down to none) before anything else is cut off.
  function fit() {
    const main = document.querySelector("main");
    const current = byId("current");
    const history = byId("history");
    const waiting = byId("waiting");
    const items = Array.from(byId("calls").children);
    items.forEach((li) => { li.hidden = false; });
    history.classList.remove("none");
    // The call may take up to 45 % of the height in landscape, 35 % in portrait (where the
    // waiting table and the recent calls stack below it).
    const share = window.innerHeight > window.innerWidth ? 0.35 : 0.45;
    shrink("--current-scale", () => fits(current) && current.offsetHeight <= main.clientHeight * share, 0.4);
    shrink("--queues-scale", () => fits(waiting) && fits(main), 0.4);
    for (let i = items.length - 1; i >= 0 && !(fits(history) && fits(main)); i -= 1) {
      items[i].hidden = true;
    }
    const shown = items.filter((li) => !li.hidden).length;
    history.classList.toggle("none", shown === 0);
    document.body.dataset.recentShown = String(shown);
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
    lastState = state;
    setText(byId("site"), hyphenate(state.site, "de"));
    const calls = (state.calls || []).filter((c) => !department || c.department === department);
    const queues = (state.queues || []).filter((q) => !department || q.department === department);

    const current = byId("current-call");
    const newest = calls[0];
    if (newest) {
      current.classList.remove("empty");
      setText(current.querySelector(".ticket"), newest.ticket);
      setText(current.querySelector(".desk .de"), hyphenate(newest.desk_labels.de || newest.desk, "de"));
      setText(current.querySelector(".desk .en"), hyphenate(newest.desk_labels.en || "", "en"));
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
      li.appendChild(inLanguage("span", "desk", "de", c.desk_labels.de || c.desk));
      return li;
    });
    list.replaceChildren(...items);

    const rows = queues.map((q) => {
      const tr = el("tr");
      const name = el("td", "service");
      name.appendChild(inLanguage("span", "de", "de", q.name.de));
      name.appendChild(inLanguage("span", "en", "en", q.name.en));
      tr.appendChild(name);
      tr.appendChild(el("td", "num waiting", String(q.waiting)));
      tr.appendChild(el("td", "num wait", q.waiting > 0 ? "≈ " + q.wait_minutes + " min" : "–"));
      return tr;
    });
    byId("queues").tBodies[0].replaceChildren(...rows);
    fit();
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
    window.addEventListener("resize", fit);
    connect();
    loadHyphenation();
  });
})();
