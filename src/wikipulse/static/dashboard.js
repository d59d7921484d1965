// wikipulse dashboard: log in, follow /stats/live, draw the last hour and the top lists.
// No framework and no library: the chart is SVG drawn here. The token lives in sessionStorage
// (this tab only) and travels in the Authorization header, never in a URL.
"use strict";

(() => {
  const TOKEN_KEY = "wikipulse.token";
  const SVG = "http://www.w3.org/2000/svg";
  const TOP_KINDS = [["server_name", "top-wikis"], ["page", "top-pages"], ["user", "top-users"]];
  const TOP_WINDOW_MS = 15 * 60 * 1000;
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let stream = null; // the AbortController of the /stats/live request
  let buckets = []; // the last hour, oldest first, as /stats/timeseries gives them
  let seriesUntil = null; // the `until` of the last timeseries answer (newest event time)
  let timers = [];
  let session = 0; // bumped by each login and logout, so that an old reconnect loop stops

  // ---------------------------------------------------------------- login and logout

  function showLogin(message) {
    $("dashboard-view").hidden = true;
    $("logout").hidden = true;
    $("live-state").hidden = true;
    $("login-view").hidden = false;
    const error = $("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("password").value = "";
    $("username").focus();
  }

  function logout(message) {
    session += 1;
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (stream) stream.abort();
    stream = null;
    timers.forEach(clearInterval);
    timers = [];
    showLogin(message);
  }

  async function login(event) {
    event.preventDefault();
    const button = event.submitter || $("login-form").querySelector("button");
    button.disabled = true;
    let response;
    try {
      response = await fetch("/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: $("username").value, password: $("password").value }),
        cache: "no-store",
      });
    } catch (err) {
      button.disabled = false;
      return showLogin("Cannot reach the server.");
    }
    button.disabled = false;
    if (response.ok) {
      token = (await response.json()).access_token;
      sessionStorage.setItem(TOKEN_KEY, token);
      return start();
    }
    if (response.status === 401) return showLogin("Incorrect user name or password.");
    if (response.status === 429) {
      const wait = response.headers.get("Retry-After");
      return showLogin("Too many attempts" + (wait ? `; try again in ${wait} s.` : "."));
    }
    if (response.status === 422) return showLogin("Enter a user name and a password.");
    showLogin(`Login failed (HTTP ${response.status}).`);
  }

  async function authorized(path) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
    if (response.status === 401) {
      logout("Your session has expired; please log in again.");
      throw new Error("unauthorized");
    }
    return response;
  }

  // ---------------------------------------------------------------- the live stream

  function setLive(text, state) {
    const el = $("live-state");
    el.textContent = text;
    el.className = `live ${state}`;
    el.hidden = false;
  }

  async function follow() {
    const mine = session;
    let delay = 1000;
    while (token && mine === session) {
      const controller = new AbortController();
      stream = controller;
      try {
        const response = await fetch("/stats/live", {
          headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
          cache: "no-store",
          signal: controller.signal,
        });
        if (response.status === 401) return logout("Your session has expired; please log in again.");
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        setLive("live", "on");
        delay = 1000;
        if (await readEvents(response.body)) return; // the token expired
      } catch (err) {
        if (controller.signal.aborted) return;
      }
      if (!token || mine !== session) return;
      setLive("reconnecting…", "off");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  // Reads SSE blocks (the server separates them by "\n\n"); true if the stream said `expired`.
  async function readEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue; // keep-alive comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") name = text;
          else if (field === "data") data.push(text);
        }
        if (name === "expired") {
          logout("Your session has expired; please log in again.");
          return true;
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  function onEvent(name, body) {
    if (name === "stats") showStats(body);
    else if (name === "bucket") addBucket(body);
  }

  // ---------------------------------------------------------------- totals and wikis

  function showStats(stats) {
    $("total").textContent = String(stats.total);
    $("distinct-users").textContent = String(stats.distinct_users);
    $("bots").textContent = String(stats.bots);
    $("non-bots").textContent = String(stats.non_bots);
    const wikis = Object.entries(stats.by_server_name).slice(0, 30);
    fillList($("wikis-all-time"), wikis.map(([wiki, count]) => ({ name: wiki, count })));
    setLive(`live · ${new Date().toLocaleTimeString([], { hour12: false })}`, "on");
  }

  function fillList(list, items) {
    list.replaceChildren();
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "nothing yet";
      list.append(li);
      return;
    }
    const top = Math.max(...items.map((item) => item.count), 1);
    for (const item of items) {
      const li = document.createElement("li");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${(100 * item.count) / top}%`;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = item.name;
      name.title = item.detail ? `${item.name} (${item.detail})` : item.name;
      if (item.detail) {
        const wiki = document.createElement("span");
        wiki.className = "wiki";
        wiki.textContent = item.detail;
        name.append(wiki);
      }
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = String(item.count);
      li.append(bar, name, count);
      list.append(li);
    }
  }

  // ---------------------------------------------------------------- consumer state

  async function refreshStatus() {
    let body;
    try {
      const response = await fetch("/status", { cache: "no-store" });
      body = (await response.json()).consumer;
    } catch (err) {
      $("c-connected").textContent = "the service does not answer";
      $("c-connected").className = "bad";
      return;
    }
    $("c-connected").textContent = body.connected ? "connected" : "disconnected";
    $("c-connected").className = body.connected ? "ok" : "bad";
    $("c-lag").textContent = body.lag_seconds === null ? "–" : duration(body.lag_seconds);
    $("c-consumed").textContent = String(body.events_consumed);
    $("c-reconnects").textContent = String(body.reconnects);
    $("c-store").textContent = body.store_ok ? "ok" : "failing";
    $("c-store").className = body.store_ok ? "ok" : "bad";
    $("c-error").textContent = body.last_error || "none";
    $("c-error").className = body.last_error ? "bad" : "";
  }

  function duration(seconds) {
    const abs = Math.abs(seconds);
    if (abs < 120) return `${seconds.toFixed(1)} s`;
    if (abs < 7200) return `${Math.round(seconds / 60)} min`;
    if (abs < 172800) return `${Math.round(seconds / 3600)} h`;
    return `${Math.round(seconds / 86400)} days`;
  }

  // ---------------------------------------------------------------- events per minute

  async function refreshSeries() {
    const response = await authorized("/stats/timeseries?step=60");
    if (response.status === 404 || response.status === 501) {
      $("rate-chart").setAttribute("hidden", "");
      return note("rate-note", "This server has no time windows (/stats/timeseries), so there is no chart.");
    }
    if (!response.ok) return note("rate-note", `The last hour is unavailable (HTTP ${response.status}).`);
    const body = await response.json();
    buckets = body.buckets;
    seriesUntil = body.until;
    note("rate-note", "");
    drawChart();
  }

  // The newest minute, pushed by /stats/live: replaces the last bar or adds the next one; a
  // gap of more than one minute reloads the hour.
  function addBucket(bucket) {
    if (!buckets.length) return;
    const last = buckets[buckets.length - 1];
    const ahead = Date.parse(bucket.start) - Date.parse(last.start);
    if (ahead === 0) buckets[buckets.length - 1] = bucket;
    else if (ahead === 60000) buckets = [...buckets.slice(1), bucket];
    else if (ahead > 0) return refreshSeries().catch(() => {});
    else return;
    seriesUntil = new Date(Date.parse(bucket.start) + 60000).toISOString().replace(".000Z", "Z");
    drawChart();
  }

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    parent.append(el);
    return el;
  }

  function niceMax(value) {
    if (value <= 5) return 5;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function hhmm(iso) {
    return iso.slice(11, 16);
  }

  function drawChart() {
    const chart = $("rate-chart");
    chart.removeAttribute("hidden"); // an SVG element has no `hidden` property
    const width = chart.clientWidth || 720;
    const height = chart.clientHeight || 230;
    const left = 44, right = 6, top = 8, bottom = 22;
    const plotW = width - left - right, plotH = height - top - bottom;
    chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
    chart.replaceChildren();
    const max = niceMax(Math.max(1, ...buckets.map((b) => b.total)));
    const y = (value) => top + plotH - (plotH * value) / max;
    for (let i = 0; i <= 4; i++) {
      const value = (max * i) / 4;
      svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }, chart);
      const label = svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" }, chart);
      label.textContent = Number.isInteger(value) ? String(value) : value.toFixed(1);
    }
    const slot = plotW / Math.max(buckets.length, 1);
    const barW = Math.max(1, slot * 0.8);
    buckets.forEach((bucket, i) => {
      const x = left + i * slot + (slot - barW) / 2;
      const group = svg("g", {}, chart);
      const title = svg("title", {}, group);
      title.textContent = `${hhmm(bucket.start)} UTC: ${bucket.total} events, ${bucket.bots} by bots`;
      svg("rect", { x, width: barW, y: y(bucket.non_bots), height: y(0) - y(bucket.non_bots), class: "bar-humans" }, group);
      svg("rect", { x, width: barW, y: y(bucket.total), height: y(bucket.non_bots) - y(bucket.total), class: "bar-bots" }, group);
      const every = width < 500 ? 15 : 10;
      if (i % every === 0) {
        const label = svg("text", { x: x + barW / 2, y: height - 6, "text-anchor": "middle" }, chart);
        label.textContent = hhmm(bucket.start);
      }
    });
  }

  // ---------------------------------------------------------------- top lists

  async function refreshTops() {
    let range = "";
    if (seriesUntil) {
      const since = new Date(Date.parse(seriesUntil) - TOP_WINDOW_MS).toISOString().replace(".000Z", "Z");
      range = `&since=${encodeURIComponent(since)}&until=${encodeURIComponent(seriesUntil)}`;
    }
    for (const [by, id] of TOP_KINDS) {
      const response = await authorized(`/stats/top?by=${by}&limit=10${range}`);
      if (response.status === 404 || response.status === 501) {
        document.querySelectorAll(".tops .top").forEach((el) => (el.hidden = true));
        return note("top-note", "This server has no time windows (/stats/top), so there are no top lists.");
      }
      if (!response.ok) return note("top-note", `The top lists are unavailable (HTTP ${response.status}).`);
      const items = (await response.json()).items.map((item) => ({
        name: by === "page" ? item.title : item[by],
        detail: by === "page" ? item.server_name : "",
        count: item.count,
      }));
      fillList($(id), items);
    }
    note("top-note", "");
  }

  function note(id, text) {
    $(id).textContent = text;
    $(id).hidden = !text;
  }

  // ---------------------------------------------------------------- start

  function every(ms, task) {
    const run = () => task().catch(() => {});
    run();
    timers.push(setInterval(run, ms));
  }

  async function start() {
    session += 1;
    $("login-view").hidden = true;
    $("dashboard-view").hidden = false;
    $("logout").hidden = false;
    setLive("connecting…", "");
    follow();
    every(5000, refreshStatus);
    every(60000, async () => {
      await refreshSeries();
      await refreshTops();
    });
    timers.push(setInterval(() => refreshTops().catch(() => {}), 15000));
  }

  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout(""));
  window.addEventListener("resize", () => buckets.length && drawChart());
  if (token) start();
  else showLogin("");
})();
