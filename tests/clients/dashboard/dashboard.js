// Opens the dashboard in headless Chromium and reports, as JSON on stdout: the records-in curve
// twice (once it has points, and a few seconds later), console errors, failed requests and any
// request that left the broker's own address. Usage: node dashboard.js URL [screenshot.png]
const { chromium } = require("playwright-core");

const url = process.argv[2];
const shot = process.argv[3];
const deadline = Date.now() + 60000;

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const errors = [];
  const external = [];
  try {
    const page = await browser.newPage();
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("requestfailed", (r) => errors.push("request failed: " + r.url()));
    page.on("request", (r) => { if (!r.url().startsWith(url)) external.push(r.url()); });
    await page.goto(url);
    const sample = () => page.evaluate(() => {
      const line = document.querySelector("#records polyline");
      return {
        points: line ? line.getAttribute("points").trim().split(/\s+/).filter(Boolean) : [],
        legend: document.getElementById("records-legend").textContent,
        latency: document.getElementById("produce-legend").textContent,
        status: document.getElementById("status").textContent,
      };
    });
    let first = await sample();
    while (first.points.length < 2 && Date.now() < deadline) {
      await page.waitForTimeout(250);
      first = await sample();
    }
    await page.waitForTimeout(4500);
    const second = await sample();
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    console.log(JSON.stringify({ first, second, errors, external }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.log(JSON.stringify({ fatal: String(e), errors, external }));
  process.exit(1);
});
