// Admin overview: who is in the building (printable evacuation list), today's silent alarms,
// devices with reprint of failed tickets, today's statistics, plugins. Refreshed every few
// seconds while open.
"use strict";

(function () {
  const { el, byId, bilingual, api, time, login, logout } = window.LS;
  const REFRESH_MS = 3000;

  function row(cells) {
    const tr = el("tr");
    cells.forEach((cell) => {
      if (cell instanceof Node) {
        const td = el("td");
        td.appendChild(cell);
        tr.appendChild(td);
      } else {
        tr.appendChild(el("td", typeof cell === "number" ? "num" : "", cell === null || cell === undefined ? "" : cell));
      }
    });
    return tr;
  }

  function minutes(value) {
    return value === null || value === undefined ? "–" : value.toFixed(1) + " min";
  }

  async function refresh() {
    const [presence, devices, stats, plugins, alarms, clock] = await Promise.all([
      api("GET", "/presence"), api("GET", "/devices"), api("GET", "/stats"),
      api("GET", "/plugins"), api("GET", "/alarms"), api("GET", "/clock"),
    ]);
    if (presence.status === 401) {
      window.location.reload();
      return;
    }
    if (presence.status === 200) {
      renderEvacuation(presence.body);
      const people = presence.body.people;
      byId("presence-count").textContent = String(people.length);
      byId("presence-time").textContent = time(Date.now());
      byId("presence").tBodies[0].replaceChildren(...people.map((p) => {
        const tr = row([p.ticket, p.name || "", bilingual(p.service_name), STATES[p.state] || p.state,
          p.desk_label ? p.desk_label.de : (p.waiting_area ? p.waiting_area.de : ""),
          p.since_local, p.appointment || ""]);
        tr.children[1].className = "name";
        return tr;
      }));
    }
    if (devices.status === 200) {
      byId("devices").tBodies[0].replaceChildren(...devices.body.devices.map((d) => row([
        d.id, d.role, d.state + (d.connected === false ? " (offline)" : ""), d.paper || "",
        d.printed, d.print_failures, d.last_error || ""])));
      byId("failed").tBodies[0].replaceChildren(...devices.body.failed_prints.map((f) => {
        const button = el("button", null, "Neu drucken · Reprint");
        button.dataset.ticket = f.ticket;
        button.addEventListener("click", async () => {
          button.disabled = true;
          await api("POST", "/tickets/" + encodeURIComponent(f.ticket) + "/reprint");
          refresh();
        });
        return row([f.ticket, f.printer, f.reason, time(f.at), button]);
      }));
    }
    if (stats.status === 200) {
      byId("stats").tBodies[0].replaceChildren(...stats.body.services.map((s) => row([
        bilingual(s.name), s.issued, s.served, s.no_shows, s.waiting,
        minutes(s.average_wait_minutes), minutes(s.average_service_minutes)])));
    }
    if (plugins.status === 200) {
      byId("plugins").tBodies[0].replaceChildren(...plugins.body.plugins.map((p) => row([
        p.device, p.role, p.plugin || "", p.plugin_file, p.state])));
    }
    if (alarms.status === 200) {
      const list = alarms.body.alarms;
      raiseAlarms(list);
      byId("alarms-section").classList.toggle("alarm-box", list.length > 0);
      byId("alarms").replaceChildren(...(list.length ? list.map((a) => el("li", null,
        a.at_local + " – " + (a.desk_label ? a.desk_label.de : a.desk) + " (" + a.source + ")"
        + (a.acknowledged_local ? " – quittiert · acknowledged " + a.acknowledged_local
          + " (" + a.acknowledged_by + ")" : " – offen · open")))
        : [el("li", null, "Keine · None")]));
    }
    if (clock.status === 200) {
      const held = clock.body.held === true;
      byId("clock-section").hidden = !held;
      if (held) {
        byId("clock-wall").textContent = clock.body.wall_local;
        byId("clock-wall-en").textContent = clock.body.wall_local;
        byId("clock-engine").textContent = clock.body.engine_local;
        byId("clock-engine-en").textContent = clock.body.engine_local;
      }
      const waiting = clock.body.unsynchronised;
      byId("sync-section").hidden = !waiting;
      if (waiting) {
        byId("sync-day").textContent = waiting.day_local;
        byId("sync-day-en").textContent = waiting.day_local;
        byId("sync-wall").textContent = waiting.wall_local;
        byId("sync-wall-en").textContent = waiting.wall_local;
        byId("sync-reason").textContent = waiting.reason;
      }
    }
    document.body.dataset.refreshed = String(Date.now());
  }

  // The place of a person in the building: the desk, else the waiting area.
  function place(p) {
    if (p.desk_label) return p.desk_label.de + " · " + p.desk_label.en;
    if (p.waiting_area) return p.waiting_area.de + " · " + p.waiting_area.en;
    return "?";
  }

  const STATES = {
    waiting: "wartet · waiting", called: "aufgerufen · called", serving: "in Bearbeitung · serving",
    parked: "geparkt · parked",
  };

  // The printed evacuation list (print-only): site, date and time, and per place a table
  // with a box to tick for each person.
  function renderEvacuation(body) {
    byId("print-site").textContent = body.site || "";
    byId("print-time").textContent = body.at_local || "";
    byId("print-count").textContent = String(body.people.length);
    const places = new Map();
    body.people.forEach((p) => {
      const key = place(p);
      if (!places.has(key)) places.set(key, []);
      places.get(key).push(p);
    });
    const blocks = [];
    Array.from(places.keys()).sort().forEach((key) => {
      const people = places.get(key);
      const block = el("section", "place");
      block.appendChild(el("h2", null, key + " (" + people.length + ")"));
      const table = el("table");
      const head = el("tr");
      ["", "Nummer · Number", "Name", "Anliegen · Service", "Status", "Seit · Since"].forEach((h) => head.appendChild(el("th", null, h)));
      table.appendChild(el("thead")).appendChild(head);
      const tbody = el("tbody");
      people.forEach((p) => {
        const tr = row(["☐", p.ticket, p.name || "", p.service_name ? p.service_name.de : p.service,
          STATES[p.state] || p.state, p.since_local]);
        tr.children[0].className = "check";
        tbody.appendChild(tr);
      });
      table.appendChild(tbody);
      block.appendChild(table);
      blocks.push(block);
    });
    byId("print-places").replaceChildren(...blocks);
  }

  // Silent alarms nobody has acknowledged: a red banner and a siren-like tone every 2 s
  // until someone presses "Acknowledge". That acknowledges them for everyone: the engine
  // records who and when, every admin page goes quiet, the desk's light stops blinking and
  // the city's security service is told over MQTT.
  let alarmTimer = null;
  let audio = null;
  let pending = [];

  function beep() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      const start = audio.currentTime + 0.02;
      [0, 0.35, 0.7].forEach((offset, i) => {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        osc.type = "square";
        osc.frequency.value = i % 2 ? 660 : 880;
        gain.gain.setValueAtTime(0.0001, start + offset);
        gain.gain.exponentialRampToValueAtTime(0.4, start + offset + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.3);
        osc.connect(gain).connect(audio.destination);
        osc.start(start + offset);
        osc.stop(start + offset + 0.32);
      });
    } catch (e) {
      // No audio device: the banner still shows the alarm.
    }
    document.body.dataset.alarmSounds = String(Number(document.body.dataset.alarmSounds || 0) + 1);
  }

  function raiseAlarms(list) {
    pending = list.filter((a) => a.acknowledged_at === null || a.acknowledged_at === undefined);
    const banner = byId("alarm-banner");
    banner.hidden = pending.length === 0;
    document.body.dataset.alarm = pending.length ? "raised" : "";
    if (!pending.length) {
      clearInterval(alarmTimer);
      alarmTimer = null;
      return;
    }
    byId("alarm-banner-text").textContent = pending.map((a) =>
      a.at_local + " – " + (a.desk_label ? a.desk_label.de + " · " + a.desk_label.en : a.desk)).join("; ");
    if (!alarmTimer) {
      beep();
      alarmTimer = setInterval(beep, 2000);
    }
  }

  async function acknowledgeAlarms() {
    const button = byId("alarm-ack");
    button.disabled = true;
    const refused = [];
    for (const alarm of pending) {
      const answer = await api("POST", "/alarms/" + alarm.seq + "/acknowledge");
      if (answer.status !== 200) {
        refused.push((answer.body && answer.body.message) || ("HTTP " + answer.status));
      }
    }
    byId("alarm-message").textContent = refused.join("; ");
    button.disabled = false;
    if (!refused.length) {
      raiseAlarms([]);
    }
    refresh();
  }

  // One confirmation for both notices: a held jump and a day waiting for the clock.
  async function confirmClock(buttonId, messageId) {
    const button = byId(buttonId);
    button.disabled = true;
    const answer = await api("POST", "/clock/confirm");
    byId(messageId).textContent = answer.status === 200 ? ""
      : (answer.body && answer.body.message) || ("HTTP " + answer.status);
    button.disabled = false;
    refresh();
  }

  function start(user) {
    byId("user").textContent = user.name;
    byId("logout").hidden = false;
    if (user.role !== "admin") {
      byId("overview").hidden = true;
      byId("user").textContent = user.name + " – nur für Admins · admins only";
      return;
    }
    byId("overview").hidden = false;
    refresh();
    setInterval(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("logout").addEventListener("click", logout);
    byId("print").addEventListener("click", () => window.print());
    byId("clock-confirm").addEventListener("click",
      () => confirmClock("clock-confirm", "clock-message"));
    byId("sync-confirm").addEventListener("click",
      () => confirmClock("sync-confirm", "sync-message"));
    byId("alarm-ack").addEventListener("click", acknowledgeAlarms);
    login(start);
  });
})();
