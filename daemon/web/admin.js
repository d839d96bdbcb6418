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
      const people = presence.body.people;
      byId("presence-count").textContent = String(people.length);
      byId("presence-time").textContent = time(Date.now());
      byId("presence").tBodies[0].replaceChildren(...people.map((p) => {
        const tr = row([p.ticket, p.name || "", bilingual(p.service_name), p.state,
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
      byId("alarms-section").classList.toggle("alarm-box", list.length > 0);
      byId("alarms").replaceChildren(...(list.length ? list.map((a) => el("li", null,
        a.at_local + " – " + (a.desk_label ? a.desk_label.de : a.desk) + " (" + a.source + ")"))
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
    }
    document.body.dataset.refreshed = String(Date.now());
  }

  async function confirmClock() {
    const button = byId("clock-confirm");
    button.disabled = true;
    const answer = await api("POST", "/clock/confirm");
    byId("clock-message").textContent = answer.status === 200 ? ""
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
    byId("clock-confirm").addEventListener("click", confirmClock);
    login(start);
  });
})();
