// Drives headless Chromium through playwright-core (tests/.npm/node_modules) for tests/support/perfetto_ui.py.
// usage: node perfetto_ui.js SPEC.json   -> prints one JSON object on stdout
// SPEC: {url, chromium, mode: "perfetto" | "page", queries: {name: sql}, screenshot, timeout_ms, width, height,
//        wait_for, evals: {name: js expression}, offline: abort every request that leaves 127.0.0.1}
// mode "perfetto": open the Perfetto UI at url (a #!/?url=... link), wait for the loaded trace's engine
// (window.app.trace.engine: the UI's debug global in v52), run each SQL query, then wait until the
// expression wait_for is true (e.g. `vllm-w2ext view`'s window.__w2extArranged), evaluate each of
// evals in the page, screenshot.
// mode "page": open any page, wait for the load event, screenshot.
"use strict";
const fs = require("fs");
const path = require("path");

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { chromium } = require(path.join(spec.node_modules, "playwright-core"));

(async () => {
  const out = { ok: false, rows: {}, console_errors: [], failed_requests: [], load_ms: null };
  const browser = await chromium.launch({
    executablePath: spec.chromium,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: spec.width || 1600, height: spec.height || 900 } });
    page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text().slice(0, 300)); });
    page.on("requestfailed", (r) => out.failed_requests.push(r.url().slice(0, 200)));
    if (spec.offline) {       // as on a machine without internet: every request off this host fails
      out.blocked_requests = [];
      await page.route((u) => !/^(https?:\/\/(127\.0\.0\.1|localhost)(:\d+)?\/|data:|blob:|file:)/.test(u.href),
                       (route) => { out.blocked_requests.push(route.request().url().slice(0, 200)); return route.abort(); });
    }
    const t0 = Date.now();
    await page.goto(spec.url, { waitUntil: "load", timeout: spec.timeout_ms });
    if (spec.mode === "perfetto") {
      await page.waitForFunction(() => window.app && window.app.trace && window.app.trace.engine,
                                 null, { timeout: spec.timeout_ms, polling: 200 });
      out.load_ms = Date.now() - t0;
      for (const [name, sql] of Object.entries(spec.queries || {})) {
        out.rows[name] = await page.evaluate(async (q) => {
          const r = await window.app.trace.engine.query(q);
          const cols = r.columns();
          const rows = [];
          for (const it = r.iter({}); it.valid(); it.next()) {
            const row = {};
            for (const c of cols) {
              const v = it.get(c);
              row[c] = typeof v === "bigint" ? "bigint:" + v.toString()
                     : v instanceof Uint8Array ? "<bytes>" : v;
            }
            rows.push(row);
          }
          return rows;
        }, sql);
      }
      if (spec.wait_for) {
        await page.waitForFunction(spec.wait_for, null, { timeout: spec.timeout_ms, polling: 200 });
      }
      out.evals = {};
      for (const [name, expr] of Object.entries(spec.evals || {})) {
        out.evals[name] = await page.evaluate(expr);
      }
      await page.waitForTimeout(1500);          // let the timeline draw before the screenshot
    } else {
      out.load_ms = Date.now() - t0;
      await page.waitForTimeout(spec.settle_ms || 300);
    }
    if (spec.screenshot) await page.screenshot({ path: spec.screenshot, fullPage: spec.mode !== "perfetto" });
    out.title = await page.title();
    out.ok = true;
  } catch (e) {
    out.error = String(e && e.stack || e).slice(0, 2000);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out));
})();
