// A browser for the Rust web tests: Debian's headless chromium driven by playwright-core over
// the DevTools protocol. Reads one JSON command per line on stdin, answers one JSON line on
// stdout ({"ok":true,...} or {"ok":false,"error":"..."}):
//   {"cmd":"open","url":..,"width":1920,"height":1080}   new page (replaces the old one)
//   {"cmd":"wait_text","selector":..,"text":..,"timeout_ms":..}  -> {"ms":..} until the
//        element's textContent contains text
//   {"cmd":"text","selector":..}                         -> {"text":..}
//        (wait_text and text ignore soft hyphens: the pages put them into long words)
//   {"cmd":"html","selector":..}                         -> {"html":..} (innerHTML)
//   {"cmd":"eval","js":..}                               -> {"value":..}
//   {"cmd":"click","selector":..} / {"cmd":"fill","selector":..,"value":..}
//   {"cmd":"screenshot","path":..}
//   {"cmd":"media","media":"print"|"screen"}   render as for print / back to the screen
//   {"cmd":"pdf","path":..}                    print the page to an A4 PDF
//   {"cmd":"heap"}  -> {"used":bytes} after a forced garbage collection (DevTools protocol)
//   {"cmd":"dialogs"} -> {"count":n} alert/confirm/prompt dialogs seen (an XSS would open one)
//   {"cmd":"close"}
// Every command but close and dialogs takes an optional "page" name (default "main"): several
// pages can be open at once, e.g. a kiosk, a clerk console and the wall display.
// The flags are the ones that work on this kind of machine (see the tool library's env notes).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
// Several named pages may be open at once ("page" in a command, default "main").
const pages = {};
let page = null;
let cdp = null;
let dialogs = 0;
const errors = [];

async function handle(c) {
  const name = c.page || "main";
  if (c.cmd !== "open" && c.cmd !== "close" && c.cmd !== "dialogs") {
    page = pages[name] ? pages[name].page : null;
    cdp = pages[name] ? pages[name].cdp : null;
    if (!page) throw new Error("no page " + name);
  }
  switch (c.cmd) {
    case "open": {
      if (pages[name]) await pages[name].page.close();
      const options = { viewport: { width: c.width || 1920, height: c.height || 1080 } };
      if (c.timezone) options.timezoneId = c.timezone;
      page = await browser.newPage(options);
      page.on("dialog", async (d) => { dialogs += 1; await d.dismiss(); });
      page.on("pageerror", (e) => errors.push(String(e)));
      cdp = await page.context().newCDPSession(page);
      pages[name] = { page, cdp };
      await page.goto(c.url, { waitUntil: "load" });
      return {};
    }
    case "wait_text": {
      const started = Date.now();
      await page.waitForFunction(
        ([selector, text]) => {
          const el = document.querySelector(selector);
          return el && el.textContent.replaceAll("\u00ad", "").includes(text);
        },
        [c.selector, c.text],
        { timeout: c.timeout_ms || 5000, polling: 10 },
      );
      return { ms: Date.now() - started };
    }
    case "text":
      return { text: await page.evaluate((s) => document.querySelector(s)?.textContent?.replaceAll("\u00ad", "") ?? null, c.selector) };
    case "html":
      return { html: await page.evaluate((s) => document.querySelector(s)?.innerHTML ?? null, c.selector) };
    case "eval":
      return { value: await page.evaluate(c.js) };
    case "click":
      await page.click(c.selector);
      return {};
    case "fill":
      await page.fill(c.selector, c.value);
      return {};
    case "screenshot":
      await page.screenshot({ path: c.path, fullPage: false });
      return {};
    case "media":
      await page.emulateMedia({ media: c.media });
      return {};
    case "pdf":
      await page.pdf({ path: c.path, format: "A4" });
      return {};
    case "heap": {
      await cdp.send("HeapProfiler.collectGarbage");
      const usage = await cdp.send("Runtime.getHeapUsage");
      return { used: usage.usedSize, total: usage.totalSize };
    }
    case "dialogs":
      return { count: dialogs, page_errors: errors };
    case "close":
      await browser.close();
      process.exit(0);
    default:
      throw new Error("unknown command " + c.cmd);
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let answer;
  try {
    answer = { ok: true, ...(await handle(JSON.parse(line))) };
  } catch (e) {
    answer = { ok: false, error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
await browser.close();
