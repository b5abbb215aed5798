/* The overview: region cards, the region-pair matrix, dead letters by reason and certificates, redrawn from each
   snapshot the server pushes (server-sent events on /api/events: one scrape loop for every open page). */
"use strict";

(() => {
  const {h, svg, fig, num, rate, pct, ms, days, clock, replace, NAMES} = Y;
  let regions = Y.regions();
  let names = NAMES;
  const live = document.getElementById("live");

  function setLive(state, text) {
    live.hidden = false;
    live.className = "live " + state;
    live.textContent = text;
  }

  const total = (f) => (f ? f.total : null);
  const rateOf = (f) => (f ? f.rate : null);
  const sum = (values) => (values.some((v) => v !== null && v !== undefined)
    ? values.reduce((a, v) => a + (v || 0), 0) : null);

  function stat(label, key, value, text, sub) {
    return h("div", {class: "stat"}, h("div", {class: "label"}, label),
      fig("div", key, value, text, {class: "value"}), h("div", {class: "sub"}, sub || ""));
  }

  function renderSummary(snap) {
    const docs = regions.map((r) => snap.regions[r]).filter(Boolean);
    const outRate = sum(docs.map((d) => d.out && d.out.accepted.rate));
    const inRate = sum(docs.map((d) => d.in && d.in.delivered.rate));
    const rejRate = sum(docs.map((d) => d.in && d.in.rejected.rate));
    const dlqRate = sum(docs.map((d) => d.dead_letters && d.dead_letters.rate));
    const delivered = sum(docs.map((d) => d.in && d.in.delivered.total));
    const rejected = sum(docs.map((d) => d.in && d.in.rejected.total));
    const dlq = sum(docs.map((d) => d.dead_letters && d.dead_letters.total));
    const ready = docs.filter((d) => d.up && d.ready).length;
    const seen = inRate === null ? null : inRate + (rejRate || 0);
    replace(document.getElementById("summary"),
      stat("regions ready", "exchange.ready", ready, `${ready} / ${regions.length}`,
        docs.filter((d) => !d.up).map((d) => `${d.region} unreachable`).join(", ") || "every gateway answers"),
      stat("sent", "exchange.out.rate", outRate, rate(outRate), "accepted from the platforms"),
      stat("delivered", "exchange.in.rate", inRate, rate(inRate), `${num(delivered)} since the gateways started`),
      stat("rejected", "exchange.error_ratio", seen ? (rejRate || 0) / seen : null,
        seen ? pct((rejRate || 0) / seen) : "–", `${num(rejected)} since the gateways started`),
      stat("dead letters", "exchange.dlq.rate", dlqRate, rate(dlqRate), `${num(dlq)} since the gateways started`));
  }

  function sparkline(series) {
    const width = 240, height = 42;
    const el = svg("svg", {class: "spark", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
      role: "img", "aria-label": "messages per second, last minutes"});
    el.append(svg("line", {class: "grid", x1: 0, y1: height - 1, x2: width, y2: height - 1}));
    const values = [...series.out, ...series.in].filter((v) => v !== null && v !== undefined);
    const top = Math.max(1, ...values);
    for (const [kind, points] of [["out", series.out], ["in", series.in]]) {
      const n = points.length;
      if (n < 2) continue;
      const coords = points.map((v, i) => `${((i / (n - 1)) * width).toFixed(1)},` +
        `${(height - 2 - ((v || 0) / top) * (height - 6)).toFixed(1)}`);
      el.append(svg("polyline", {class: kind, points: coords.join(" ")}));
    }
    return el;
  }

  function readiness(d) {
    if (!d.up) return h("span", {class: "pill bad", dataset: {k: `region.${d.region}.status`, value: "down"}},
      "unreachable");
    if (d.ready === true) return h("span", {class: "pill", dataset: {k: `region.${d.region}.status`, value: "ready"}},
      "ready");
    if (d.ready === false) return h("span", {class: "pill warn",
      dataset: {k: `region.${d.region}.status`, value: "not ready"}}, "not ready");
    return h("span", {class: "pill info", dataset: {k: `region.${d.region}.status`, value: "unknown"}}, "readiness ?");
  }

  function card(d, spark) {
    const r = d.region;
    const k = (name) => `region.${r}.${name}`;
    const cls = !d.up ? "card down" : d.ready === false ? "card unready" : "card";
    const lag = d.lag ? d.lag.total : null;
    const soonest = d.soonest_expiry;
    const certClass = soonest && soonest.seconds < 14 * 86400 ? "bad" : soonest && soonest.seconds < 30 * 86400
      ? "warn" : "";
    const partitions = d.lag ? Object.entries(d.lag.partitions).map(([p, v]) => `p${p}: ${num(v)}`).join(", ") : "";
    const outRate = d.out ? d.out.accepted.rate : null;
    const inRate = d.in ? sum([d.in.delivered.rate, d.in.rejected.rate]) : null;
    const note = !d.up ? `metrics: ${d.error || "no answer"}`
      : d.ready === false ? `failing: ${d.failing.join(", ")}`
      : d.readiness_error ? `readiness: ${d.readiness_error}`
      : d.build ? `${d.build.suite || ""} · yrdx ${d.build.version || "?"}` : "";
    const dl = h("dl", {class: "kv"},
      h("dt", {}, "out"), fig("dd", k("out.rate"), outRate, rate(outRate)),
      h("dt", {}, "in"), fig("dd", k("in.rate"), inRate, rate(inRate)),
      h("dt", {}, "dead letters"), fig("dd", k("dlq.rate"), d.dead_letters ? d.dead_letters.rate : null,
        rate(d.dead_letters ? d.dead_letters.rate : null),
        {class: d.dead_letters && d.dead_letters.rate > 0 ? "bad" : ""}),
      h("dt", {}, "lag"), fig("dd", k("lag"), lag, num(lag), {title: partitions, class: lag > 100 ? "warn" : ""}),
      h("dt", {}, "broker"), fig("dd", k("broker_up"), d.broker_up, d.broker_up === null ? "–"
        : d.broker_up >= 1 ? "up" : "down", {class: d.broker_up === 0 ? "bad" : ""}),
      h("dt", {}, "cert"), fig("dd", k("cert.soonest"), soonest ? soonest.seconds : null,
        soonest ? days(soonest.seconds) : "–", {class: certClass,
          title: soonest ? `soonest: ${soonest.role} ${Y.certName(soonest.name)}` : ""}),
      h("dt", {}, "inbox"), fig("dd", k("inbox"), d.inbox, num(d.inbox)),
      h("dt", {}, "in flight"), fig("dd", k("in_flight"), d.in_flight, num(d.in_flight)));
    const totals = h("div", {class: "note"},
      "totals: ", fig("span", k("out.accepted.total"), total(d.out && d.out.accepted), num(total(d.out && d.out.accepted))),
      " sent · ", fig("span", k("in.delivered.total"), total(d.in && d.in.delivered),
        num(total(d.in && d.in.delivered))),
      " delivered · ", fig("span", k("in.rejected.total"), total(d.in && d.in.rejected),
        num(total(d.in && d.in.rejected))),
      " rejected · ", fig("span", k("dlq.total"), total(d.dead_letters), num(total(d.dead_letters))), " DLQ");
    return h("article", {class: cls, dataset: {region: r}},
      h("div", {class: "head"}, h("span", {class: "code"}, r), h("span", {class: "name"}, names[r] || ""),
        readiness(d)),
      fig("span", k("up"), d.up ? 1 : 0, "", {hidden: true}),
      fig("span", k("ready"), d.ready === null ? null : d.ready ? 1 : 0, "", {hidden: true}),
      fig("span", k("asked_at"), d.asked_at, "", {hidden: true}),
      dl, totals, sparkline(spark),
      h("div", {class: "spark-legend"}, h("span", {class: "o"}, "— out"), "  ", h("span", {class: "i"}, "- - in"),
        "  · scraped ", d.scraped_at ? clock(d.scraped_at) : "never"),
      h("div", {class: note && (!d.up || d.ready === false) ? "note bad" : "note"}, note));
  }

  function renderCards(snap) {
    const spark = snap.throughput.regions;
    replace(document.getElementById("cards"), regions.map((r) => snap.regions[r] ? card(snap.regions[r],
      spark[r] || {in: [], out: []}) : null));
  }

  function cellClass(p) {
    const recent = (p.delivered.rate || 0) + (p.rejected.rate || 0) + (p.sent.rate || 0);
    if (!recent) return "idle";
    if (p.error_ratio === null || p.error_ratio === 0) return "ok";
    return p.error_ratio > 0.05 ? "bad" : "warn";
  }

  function renderMatrix(snap) {
    const pairs = {};
    for (const p of snap.pairs) pairs[`${p.from}>${p.to}`] = p;
    const head = h("tr", {}, h("th", {class: "corner"}, "from ↓ to →"),
      regions.map((r) => h("th", {}, `${r} `, h("small", {class: "muted"}, names[r] || ""))));
    const rows = regions.map((from) => h("tr", {}, h("th", {class: "row"}, from),
      regions.map((to) => {
        if (from === to) return h("td", {class: "self", title: "a region does not send to itself"});
        const p = pairs[`${from}>${to}`];
        if (!p) return h("td", {class: "idle"}, "–");
        const k = (name) => `pair.${from}.${to}.${name}`;
        return h("td", {class: cellClass(p), dataset: {pair: `${from}-${to}`}},
          fig("div", k("delivered.rate"), p.delivered.rate, rate(p.delivered.rate), {class: "big",
            title: "delivered per second at the destination"}),
          h("div", {class: "line"}, "sent ", fig("b", k("sent.rate"), p.sent.rate, rate(p.sent.rate)),
            " · err ", fig("b", k("error_ratio"), p.error_ratio, pct(p.error_ratio))),
          h("div", {class: "line"}, "p99 ", fig("b", k("p99"), p.p99_s, ms(p.p99_s)),
            h("span", {class: "muted"}, " (all: "), fig("span", k("p99_total"), p.p99_total_s, ms(p.p99_total_s)),
            h("span", {class: "muted"}, ")")),
          h("div", {class: "tot"}, fig("span", k("sent.total"), p.sent.total, num(p.sent.total)), " sent · ",
            fig("span", k("delivered.total"), p.delivered.total, num(p.delivered.total)), " delivered · ",
            fig("span", k("rejected.total"), p.rejected.total, num(p.rejected.total)), " rejected"));
      })));
    replace(document.getElementById("matrix"), h("thead", {}, head), h("tbody", {}, rows));
  }

  function renderReasons(snap) {
    const entries = Object.entries(snap.dead_letter_reasons);
    const head = h("tr", {}, h("th", {}, "reason"), h("th", {class: "num"}, "total"), h("th", {class: "num"}, "rate"),
      h("th", {}, "where"));
    const rows = entries.length ? entries.map(([reason, e]) => h("tr", {},
      h("td", {}, h("code", {}, reason)),
      fig("td", `reason.${reason}.total`, e.total, num(e.total), {class: "num"}),
      fig("td", `reason.${reason}.rate`, e.rate, rate(e.rate), {class: e.rate > 0 ? "num bad" : "num"}),
      h("td", {}, Object.entries(e.regions).filter(([, n]) => n).map(([r, n]) => [h("a", {
        href: `/dlq?region=${encodeURIComponent(r)}&reason=${encodeURIComponent(reason)}`}, `${r} ${num(n)}`), " "])),
    )) : [h("tr", {class: "empty-row"}, h("td", {colspan: 4}, "no dead letters since the gateways started"))];
    replace(document.getElementById("reasons"), h("thead", {}, head), h("tbody", {}, rows));
  }

  function renderCerts(snap) {
    const rows = [];
    for (const r of regions) {
      const d = snap.regions[r];
      if (!d || !d.certificates) continue;
      const seen = new Set();
      for (const c of d.certificates) {  // soonest first: the own one, then the soonest peer and root
        if (seen.has(c.role)) continue;
        seen.add(c.role);
        const cls = c.seconds < 14 * 86400 ? "num bad" : c.seconds < 30 * 86400 ? "num warn" : "num";
        rows.push(h("tr", {}, h("td", {}, r), h("td", {}, c.role), h("td", {title: c.name}, Y.certName(c.name)),
          fig("td", `cert.${r}.${c.role}.${c.name}`, c.seconds, days(c.seconds), {class: cls})));
      }
    }
    const head = h("tr", {}, h("th", {}, "gateway"), h("th", {}, "role"), h("th", {}, "certificate"),
      h("th", {class: "num"}, "expires in"));
    replace(document.getElementById("certs"), h("thead", {}, head), h("tbody", {}, rows.length ? rows
      : [h("tr", {class: "empty-row"}, h("td", {colspan: 4}, "no certificate figures yet"))]));
  }

  function render(snap) {
    document.getElementById("window").textContent = String(snap.window_s);
    renderSummary(snap);
    renderCards(snap);
    renderMatrix(snap);
    renderReasons(snap);
    renderCerts(snap);
    document.body.dataset.snapshotAt = String(snap.at);
    document.body.dataset.state = "live";
    setLive("on", `live · ${clock(snap.at)}`);
  }

  function connect() {
    const events = new EventSource("/api/events");
    events.addEventListener("meta", (e) => {
      const meta = JSON.parse(e.data);
      regions = meta.regions;
      names = {...NAMES, ...meta.names};
    });
    events.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
    events.addEventListener("logout", () => {
      events.close();
      Y.toLogin();
    });
    events.addEventListener("error", () => {
      setLive("off", "reconnecting…");
      if (events.readyState === EventSource.CLOSED) {
        // the stream was refused (a lapsed session answers 401): ask the API, which sends us to sign in
        Y.api("/api/snapshot").then(() => setTimeout(connect, 3000)).catch(() => {});
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    setLive("", "connecting…");
    connect();
  });
})();
