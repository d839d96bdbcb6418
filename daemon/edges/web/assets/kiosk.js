// Foyer kiosk: big buttons per service to pull a walk-in ticket, and every scan result (pushed
// over /api/v1/kiosk/ws) in large plain words; back to the start screen after RETURN_MS.
"use strict";

(function () {
  const { el, byId, bilingual, inLanguage, ready, api, socket } = window.LS;
  const RETURN_MS = 10000;
  const REFRESH_MS = 5000;
  const params = new URLSearchParams(window.location.search);
  const department = params.get("department");
  let returnTimer = null;

  function line(id, de, en) {
    const node = byId(id);
    node.replaceChildren();
    if (!de && !en) return;
    node.appendChild(inLanguage("de", de));
    node.appendChild(inLanguage("en", en));
  }

  function showResult(result) {
    byId("start").hidden = true;
    const box = byId("result");
    box.hidden = false;
    box.classList.toggle("refused", !result.accepted);
    line("result-headline", result.message.de, result.message.en);
    byId("result-number").textContent = result.ticket || "";
    line("result-desk", result.desk ? "Ihr Platz: " + result.desk.de : "",
      result.desk ? "Your desk: " + result.desk.en : "");
    line("result-area", result.waiting_area ? "Bitte warten Sie: " + result.waiting_area.de : "",
      result.waiting_area ? "Please wait: " + result.waiting_area.en : "");
    const wait = result.estimated_wait_minutes;
    line("result-wait", result.accepted && wait ? "Wartezeit etwa " + wait + " min" : "",
      result.accepted && wait ? "Waiting time about " + wait + " min" : "");
    line("result-advice", result.advice ? result.advice.de : "", result.advice ? result.advice.en : "");
    document.body.dataset.result = result.accepted ? "accepted" : "refused";
    clearTimeout(returnTimer);
    returnTimer = setTimeout(showStart, RETURN_MS);
  }

  function showStart() {
    clearTimeout(returnTimer);
    byId("result").hidden = true;
    byId("start").hidden = false;
    document.body.dataset.result = "";
    loadServices();
  }

  async function pull(service) {
    if (document.body.dataset.online === "no") return;
    const answer = await api("POST", "/kiosk/tickets", { service });
    if (answer.status === 200 && answer.body.ticket) {
      const t = answer.body;
      showResult({
        accepted: true,
        ticket: t.ticket,
        waiting_area: t.waiting_area,
        estimated_wait_minutes: t.estimated_wait_minutes,
        message: { de: "Ihre Wartenummer", en: "Your number" },
        advice: { de: "Bitte warten Sie, bis Ihre Nummer aufgerufen wird.",
          en: "Please wait until your number is called." },
      });
    } else if (answer.status === 0) {
      showOffline(true);
    } else if (answer.status === 429) {
      showResult({ accepted: false,
        message: { de: "Bitte einen Moment warten.", en: "Please wait a moment." },
        advice: { de: "Versuchen Sie es gleich noch einmal.", en: "Please try again shortly." } });
    } else {
      showResult({ accepted: false,
        message: { de: "Leider ging das nicht.", en: "Sorry, that did not work." },
        advice: { de: "Bitte wenden Sie sich an den Empfang.", en: "Please ask at the reception desk." } });
    }
  }

  // While the daemon cannot be reached the start screen says so and takes no taps.
  function showOffline(offline) {
    document.body.dataset.online = offline ? "no" : "yes";
    byId("offline").hidden = !offline;
    document.querySelectorAll("#services button").forEach((button) => {
      button.disabled = offline;
    });
  }

  async function loadServices() {
    await ready;
    const answer = await api("GET", "/kiosk/services");
    if (answer.status === 0) {
      showOffline(true);
      return;
    }
    if (answer.status !== 200) return;
    byId("site").textContent = answer.body.site || "";
    const buttons = answer.body.services
      .filter((s) => !department || s.department === department)
      .map((s) => {
        const button = el("button", "service");
        button.dataset.service = s.service;
        button.appendChild(bilingual(s.name));
        button.appendChild(el("span", "wait", s.waiting > 0
          ? s.waiting + " wartend · waiting, ≈ " + s.wait_minutes + " min" : "Keine Wartezeit · No wait"));
        button.addEventListener("click", () => pull(s.service));
        return button;
      });
    byId("services").replaceChildren(...buttons);
    buttons.forEach((button) => { button.disabled = document.body.dataset.online === "no"; });
    document.body.dataset.ready = "yes";
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("result-back").addEventListener("click", showStart);
    loadServices();
    socket("/api/v1/kiosk/ws", (message) => {
      if (message.type === "scan") showResult(message.scan);
    }, (online) => {
      showOffline(!online);
      // Back online: the waiting counts may have changed meanwhile.
      if (online && !byId("start").hidden) loadServices();
    });
    // The waiting counts on the buttons stay current while nobody touches the screen.
    setInterval(() => {
      if (!byId("start").hidden) loadServices();
    }, REFRESH_MS);
  });
})();
