// Clerk console: log in, then the desk's actions, the current visitor (ticket, service,
// appointment, documents), waiting counts; live over /api/v1/desks/{desk}/ws. The silent alarm
// needs a second, confirming click.
"use strict";

(function () {
  const { el, byId, bilingual, api, socket, time, login, logout } = window.LS;
  let desk = null;
  let live = null;
  let lastView = null;
  let online = true;
  let forwardKey = null;

  // A ticket's state in both languages.
  const STATES = {
    waiting: "wartet · waiting", called: "aufgerufen · called", serving: "in Bearbeitung · serving",
    parked: "geparkt · parked", done: "erledigt · done", no_show: "nicht erschienen · no-show",
    closed: "abgeschlossen · closed",
  };

  // Which buttons make sense now: calling only at an open desk, the visitor's actions only
  // with a visitor in the right state; everything off while the daemon cannot be reached.
  function allowed(action, view) {
    const current = view && view.current;
    const state = current ? current.state : null;
    const mode = view ? view.mode : null;
    switch (action) {
      case "next": return mode === "open";
      case "recall": case "start": case "no_show": return state === "called";
      case "finish": return state === "called" || state === "serving";
      case "park": return state === "called" || state === "serving";
      case "open": return mode !== "open";
      case "pause": return mode === "open";
      case "close": return mode !== "closed";
      default: return true;
    }
  }

  function updateButtons() {
    document.querySelectorAll("#console button").forEach((button) => {
      const action = button.dataset.action;
      button.disabled = !online || (action !== undefined && !allowed(action, lastView));
    });
    const targets = byId("forward-target").options.length;
    byId("forward").disabled = !online || !targets;
  }

  function render(view) {
    lastView = view;
    byId("desk-label").replaceChildren(bilingual(view.label));
    byId("mode").textContent = { open: "geöffnet · open", paused: "Pause · paused",
      closed: "geschlossen · closed" }[view.mode] || view.mode || "";
    const current = view.current;
    byId("no-visitor").hidden = !!current;
    byId("visitor-details").hidden = !current;
    if (current) {
      byId("visitor-ticket").textContent = current.ticket;
      byId("visitor-service").replaceChildren(bilingual(current.service_name));
      byId("visitor-state").textContent = (STATES[current.state] || current.state) +
        (current.called_at ? " · aufgerufen/called " + time(current.called_at) : "");
      byId("visitor-appointment").textContent = current.appointment
        ? "Termin · Appointment " + current.appointment : "Ohne Termin · Walk-in";
      byId("visitor-documents").replaceChildren(...current.documents.map((d) => {
        const li = el("li");
        li.appendChild(bilingual(d));
        return li;
      }));
    }
    byId("waiting").replaceChildren(...view.waiting.map((q) => {
      const tr = el("tr");
      const name = el("td");
      name.appendChild(bilingual(q.name));
      tr.appendChild(name);
      tr.appendChild(el("td", "num", q.waiting));
      tr.appendChild(el("td", "num", q.waiting > 0 ? "≈ " + q.wait_minutes + " min" : "–"));
      return tr;
    }));
    // Parked visitors of this desk, each with a button that puts them back in line here
    // (the next "Next" calls them).
    byId("parked").replaceChildren(...(view.parked.length
      ? [el("span", null, "Geparkt · Parked: "), ...view.parked.map((number) => {
        const button = el("button", "resume", "▶ " + number + " fortsetzen · resume");
        button.dataset.ticket = number;
        button.addEventListener("click", () => act("/resume", { ticket: number }));
        return button;
      })]
      : []));
    // The forward targets depend on the visitor (only desks that serve the service).
    const select = byId("forward-target");
    const key = current ? current.ticket + "/" + current.service : "";
    if (key !== forwardKey) {
      forwardKey = key;
      const options = [];
      view.forward.services.forEach((s) => {
        const option = el("option", null, "Anliegen · Service: " + s.name.de);
        option.value = "service:" + s.id;
        options.push(option);
      });
      view.forward.desks.forEach((d) => {
        const option = el("option", null, "Platz · Desk: " + d.label.de);
        option.value = "desk:" + d.id;
        options.push(option);
      });
      select.replaceChildren(...options);
    }
    updateButtons();
    document.body.dataset.seq = String(view.seq);
  }

  async function act(path, body) {
    byId("action-message").textContent = "";
    const answer = await api("POST", "/desks/" + encodeURIComponent(desk) + path, body);
    if (answer.status === 0) {
      byId("action-message").textContent =
        "Keine Verbindung zum Leitsystem – bitte gleich noch einmal. · No connection – please try again shortly.";
    } else if (answer.status === 401) {
      sessionEnded();
    } else if (answer.status !== 200) {
      const body = answer.body || {};
      const message = byId("action-message");
      message.replaceChildren();
      if (body.text) {
        message.appendChild(bilingual(body.text));
      } else {
        message.textContent = body.message || ("Fehler · Error " + answer.status);
      }
    }
    return answer;
  }

  // The session is gone (logged out elsewhere, timed out, or not kept): back to the login,
  // and the console comes back by itself after it.
  function sessionEnded() {
    if (live) live.close();
    live = null;
    byId("console").hidden = true;
    byId("logout").hidden = true;
    login(start, "Bitte erneut anmelden. · Please log in again.");
  }

  function showOnline(isOnline) {
    online = isOnline;
    byId("online").textContent = online ? "" : "(Verbindung unterbrochen · connection lost)";
    document.body.dataset.online = online ? "yes" : "no";
    updateButtons();
  }

  async function open(id) {
    desk = id;
    if (live) live.close();
    const first = await api("GET", "/desks/" + encodeURIComponent(desk));
    if (first.status === 200) render(first.body);
    if (first.status === 401) {
      sessionEnded();
      return;
    }
    let failures = 0;
    live = socket("/api/v1/desks/" + encodeURIComponent(desk) + "/ws", (message) => {
      if (message.type === "desk") render(message.desk);
    }, async (online, code) => {
      showOnline(online);
      if (online) {
        failures = 0;
        return;
      }
      // A socket refused after the daemon came back may mean the session is gone.
      failures += 1;
      if (code === 4401 || failures >= 2) {
        const who = await api("GET", "/session");
        if (who.status === 401) sessionEnded();
      }
    });
    byId("console").hidden = false;
  }

  function start(user) {
    byId("user").textContent = user.name;
    byId("logout").hidden = false;
    const params = new URLSearchParams(window.location.search);
    const desks = user.desks.length ? user.desks : [];
    const wanted = params.get("desk");
    const select = byId("desk-select");
    if (user.role === "admin" && !desks.length) {
      // An admin may use any desk: ?desk=<id>, default 1.
      open(wanted || "1");
      return;
    }
    if (desks.length > 1) {
      select.hidden = false;
      desks.forEach((d) => {
        const option = el("option", null, d);
        option.value = d;
        select.appendChild(option);
      });
      select.addEventListener("change", () => open(select.value));
    }
    open(wanted && desks.includes(wanted) ? wanted : desks[0]);
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("logout").addEventListener("click", logout);
    document.querySelectorAll("[data-action]").forEach((button) => {
      button.addEventListener("click", () => act("/" + button.dataset.action));
    });
    byId("forward").addEventListener("click", () => {
      const [kind, id] = byId("forward-target").value.split(/:(.*)/s);
      act("/forward", kind === "desk" ? { desk: id } : { service: id });
    });
    byId("alarm").addEventListener("click", () => {
      byId("alarm").hidden = true;
      byId("alarm-confirm").hidden = false;
    });
    byId("alarm-no").addEventListener("click", () => {
      byId("alarm").hidden = false;
      byId("alarm-confirm").hidden = true;
    });
    byId("alarm-yes").addEventListener("click", async () => {
      byId("alarm-confirm").hidden = true;
      byId("alarm").hidden = false;
      const answer = await act("/alarm");
      byId("alarm-done").textContent = answer.status === 200
        ? "Alarm gemeldet " + time(Date.now()) + " · Alarm raised" : "";
    });
    login(start);
  });
})();
