// Open DVC plots pages in a headless Chromium with the network cut off; print what drew.
//
//   node render.js <index.html>...   ->   {"browser": ..., "pages": [{...}, ...]} on stdout
//
// One browser serves every page (a launch costs more than a page). Each page may load only
// file:, data:, blob: and about: URLs: every other request is aborted and listed in `requests`.
// Per vega chart div: how vega-embed's promise settled, and the size and ink of what it drew;
// per <img>: its natural size.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import chromium from "@sparticuz/chromium";
import puppeteer from "puppeteer-core";

const STEP_MS = 20000; // any single browser call (launch, load, wait)
const LOCAL = /^(file|data|blob|about):/;
const here = dirname(fileURLToPath(import.meta.url));

// The whole run has a deadline too, so a wedged browser cannot hang the caller.
setTimeout(() => {
  console.error("render.js: timed out");
  process.exit(3);
}, 4 * STEP_MS).unref();

// @sparticuz/chromium unpacks its binary (and the swiftshader libraries beside it) into
// os.tmpdir() and reuses whatever `chromium` it finds there, whichever version that is: unpack
// into node_modules instead, which `npm ci` empties whenever the lockfile changes, first under
// a name of this process's own so a concurrent run never starts a half-written binary.
async function chromiumPath() {
  const dir = join(here, "node_modules", ".chromium");
  if (!existsSync(join(dir, "chromium"))) {
    const tmp = `${dir}.${process.pid}`;
    mkdirSync(tmp, { recursive: true });
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = tmp;
    try {
      await chromium.executablePath();
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
    try {
      renameSync(tmp, dir);
    } catch {
      rmSync(tmp, { recursive: true, force: true }); // another run got there first
    }
  }
  return join(dir, "chromium");
}

// Runs in the page before its own scripts: wrap vegaEmbed when vega-embed defines it, so each
// chart's outcome (drawn, or vega's error message) is known by the id DVC embeds it under.
function hookVegaEmbed() {
  const results = {};
  window.__vegaResults = results;
  let wrapped;
  Object.defineProperty(window, "vegaEmbed", {
    configurable: true,
    get: () => wrapped,
    set(embed) {
      wrapped = Object.assign(function (el, ...rest) {
        const key = String(typeof el === "string" ? el : el.id).replace(/^#/, "");
        results[key] = { state: "pending" };
        const done = embed.call(this, el, ...rest);
        done.then(
          () => (results[key] = { state: "ok" }),
          (err) => (results[key] = { state: "error", message: String(err?.message ?? err) }),
        );
        return done;
      }, embed);
    },
  });
}

// Runs in the page once the charts settled: measure each chart div and image. vega-embed
// replaces a div's contents (the inline script that called it), so the ids come from the file.
function measure(ids) {
  const size = (el) => {
    const box = el.getBoundingClientRect();
    return { width: Math.round(box.width), height: Math.round(box.height) };
  };
  // What a chart drew: vega's SVG renderer puts each mark in a `g.mark-<type>` group; its
  // canvas renderer (vega-embed's default) leaves pixels, counted where not background white.
  const ink = (el) => {
    if (el.tagName.toLowerCase() === "svg") {
      return el.querySelectorAll("g[class*='mark-'] > *").length;
    }
    if (!el.width || !el.height) return 0;
    const { data } = el.getContext("2d").getImageData(0, 0, el.width, el.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] > 0 && (data[i] < 240 || data[i + 1] < 240 || data[i + 2] < 240)) n++;
    }
    return n;
  };
  const charts = ids.map((id) => {
    const drawing = document.getElementById(id)?.querySelector("svg.marks, canvas.marks");
    return {
      id,
      embed: window.__vegaResults?.[id] ?? { state: "never called" },
      kind: drawing ? drawing.tagName.toLowerCase() : null,
      ...(drawing ? size(drawing) : { width: 0, height: 0 }),
      ink: drawing ? ink(drawing) : 0,
    };
  });
  const images = [...document.images].map((img) => ({
    src: img.getAttribute("src"),
    complete: img.complete,
    naturalWidth: img.naturalWidth,
    naturalHeight: img.naturalHeight,
  }));
  return { charts, images, hasVegaEmbed: typeof window.vegaEmbed === "function" };
}

async function render(browser, file) {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_MS);
  const requests = [];
  const errors = [];
  await page.setRequestInterception(true);
  page.on("request", (req) => {
    if (LOCAL.test(req.url())) return req.continue();
    requests.push(req.url());
    return req.abort("blockedbyclient");
  });
  page.on("pageerror", (err) => errors.push(String(err?.message ?? err)));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  await page.evaluateOnNewDocument(hookVegaEmbed);
  await page.goto(pathToFileURL(file).href, { waitUntil: "load", timeout: STEP_MS });
  // Every vegaEmbed call ran while the page parsed; wait for their promises to settle.
  await page.waitForFunction(
    () => Object.values(window.__vegaResults).every((r) => r.state !== "pending"),
    { timeout: STEP_MS, polling: 50 },
  );
  // DVC embeds each chart as `vegaEmbed('#<div id>', spec)`.
  const ids = [...readFileSync(file, "utf8").matchAll(/vegaEmbed\('#([^']+)'/g)].map((m) => m[1]);
  const result = { file, ...(await page.evaluate(measure, ids)), requests, errors };
  await page.close();
  return result;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node render.js <index.html>...");
  process.exit(2);
}
const browser = await puppeteer.launch({
  executablePath: await chromiumPath(),
  headless: "shell",
  timeout: STEP_MS,
  protocolTimeout: STEP_MS,
  args: [
    "--no-sandbox", // root in a container; the pages are our own files
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    // Belt and braces beside the request interception: no host name resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND",
  ],
});
try {
  const pages = [];
  for (const file of files) pages.push(await render(browser, file));
  console.log(JSON.stringify({ browser: await browser.version(), pages }));
} finally {
  await browser.close();
}
