// Shared helpers of the kiosk, clerk and admin pages. Data is only ever inserted with
// textContent (never as HTML); the CSP allows scripts from this origin only.
"use strict";

window.LS = (function () {
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  // Soft hyphens (U+00AD) at the syllable breaks of the catalog's long words, from
  // /api/v1/hyphenation: "Führerscheinangelegenheiten" breaks as "Führerschein-", never as
  // "…angelege" / "nheiten", in browsers without hyphenation dictionaries too.
  let hyphenation = { de: {}, en: {} };
  const hyphenationLoaded = api("GET", "/hyphenation").then((answer) => {
    if (answer.status === 200 && answer.body) hyphenation = answer.body;
  });

  function hyphenate(text, lang) {
    const words = hyphenation[lang] || {};
    return String(text).replace(/\p{L}+/gu, (word) => words[word] || word);
  }

  // A span with text of one language: lang attribute and soft hyphens.
  function inLanguage(lang, text, className) {
    const span = el("span", className === undefined ? lang : className);
    span.lang = lang;
    if (text !== undefined && text !== null) span.textContent = hyphenate(text, lang);
    return span;
  }

  // Both languages of a {de, en} text as two spans.
  function bilingual(text, className) {
    const span = el("span", className || "bi");
    if (!text) return span;
    span.appendChild(inLanguage("de", text.de));
    span.appendChild(inLanguage("en", text.en));
    return span;
  }

  // JSON request to /api/v1; resolves {status, body}.
  async function api(method, path, body) {
    const options = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["content-type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    if (method !== "GET") {
      options.headers["idempotency-key"] =
        Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
    }
    let response;
    try {
      response = await fetch("/api/v1" + path, options);
    } catch (e) {
      // The daemon cannot be reached (restarting, network down): status 0, never a throw, so
      // every caller shows it instead of doing nothing.
      return { status: 0, body: null };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    return { status: response.status, body: data };
  }

  // A WebSocket that reconnects with backoff; onMessage gets parsed JSON, onState(online,
  // closeCode) every change. A close with code 4401 (the session ended) stops reconnecting.
  function socket(path, onMessage, onState) {
    let backoff = 1000;
    let ws = null;
    let stopped = false;
    function connect() {
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      ws = new WebSocket(scheme + "//" + window.location.host + path);
      ws.onopen = () => {
        backoff = 1000;
        if (onState) onState(true);
      };
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        onMessage(message);
      };
      ws.onclose = (event) => {
        if (event.code === 4401) stopped = true;
        if (onState) onState(false, event.code);
        if (stopped) return;
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 5000);
      };
      ws.onerror = () => ws.close();
    }
    connect();
    return {
      close() {
        stopped = true;
        if (ws) ws.close();
      },
    };
  }

  // Times are shown in the site's time zone (from /api/v1/display), never the browser's: a
  // console whose computer is set to UTC must show what the tickets and lists say.
  let clock = null;
  const zoneLoaded = api("GET", "/display").then((answer) => {
    const zone = answer.status === 200 && answer.body ? answer.body.time_zone : undefined;
    try {
      clock = new Intl.DateTimeFormat("de-DE", { timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    } catch (e) {
      clock = null;
    }
  });

  // Resolves when the site's time zone and the hyphenation points are known.
  const ready = Promise.all([zoneLoaded, hyphenationLoaded]);

  function time(ms) {
    if (!ms) return "";
    if (clock) return clock.format(new Date(ms));
    const d = new Date(ms);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  // The login form of a page: calls onUser(user) after a login or with an existing session.
  // Called again when a session ended (`notice` says why); the form is wired once.
  let loginHandler = null;
  async function login(onUser, notice) {
    const form = byId("login");
    const message = byId("login-message");
    await ready;
    let who = await api("GET", "/session");
    while (who.status === 0) {
      // The daemon is not reachable yet: try again shortly, the page never gives up.
      message.textContent = "Keine Verbindung zum Leitsystem – bitte warten. · No connection – please wait.";
      form.hidden = false;
      await new Promise((done) => setTimeout(done, 2000));
      who = await api("GET", "/session");
    }
    message.textContent = notice || "";
    if (who.status === 200) {
      form.hidden = true;
      onUser(who.body);
      return;
    }
    form.hidden = false;
    const first = loginHandler === null;
    loginHandler = onUser;
    if (!first) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.textContent = "";
      const answer = await api("POST", "/login", {
        name: byId("login-name").value,
        password: byId("login-password").value,
      });
      if (answer.status === 200) {
        form.hidden = true;
        byId("login-password").value = "";
        loginHandler(answer.body);
      } else if (answer.status === 0) {
        message.textContent = "Keine Verbindung zum Leitsystem. · No connection.";
      } else if (answer.status === 429 && answer.body && answer.body.error === "busy") {
        message.textContent = "Gerade viele Anmeldungen – bitte gleich noch einmal. · Many logins right now – please try again in a moment.";
      } else if (answer.status === 429) {
        message.textContent = "Zu viele Versuche – bitte eine Minute warten. · Too many attempts – please wait a minute.";
      } else {
        message.textContent = "Name oder Passwort falsch. · Wrong name or password.";
      }
    });
  }

  async function logout() {
    await api("POST", "/logout");
    window.location.reload();
  }

  return { el, byId, bilingual, inLanguage, hyphenate, ready, api, socket, time, login, logout };
})();
