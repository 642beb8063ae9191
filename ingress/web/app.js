// The tms status page: asks for a tenant's bearer token (kept in this
// tab's sessionStorage only, never in the URL), then draws the tenant's
// next hours from GET /calendar, GET /capacity and GET /admissions/recent,
// refreshed every few seconds. Everything is built with DOM calls and
// textContent: no HTML from the answers is ever parsed.
'use strict';
(function () {
  const TOKEN_KEY = 'tms.status.token';
  const REFRESH_MS = 5000;
  const HOURS = 8;
  const TYPES = ['GOLD', 'SILVER', 'BRONZE'];
  // The SVG namespace, from the page's own <svg> (the HTML parser gives it
  // one): no URL is written in these files.
  let SVG = null;
  const CELL = 2; // px per minute
  const ROW = 22; // px per agent
  const LABEL = 170; // px of the agents' names
  const TOP = 18; // px of the hour labels

  let timer = null;
  let generation = 0;
  const $ = (id) => document.getElementById(id);

  function setState(state) { document.body.dataset.state = state; }

  function showError(message) {
    const el = $('error');
    el.textContent = message;
    el.hidden = false;
  }

  // clearBoard hides and empties what was drawn for the last token.
  function clearBoard() {
    $('board').hidden = true;
    $('forget').hidden = true;
    $('calendar-svg').replaceChildren();
    $('capacity').tBodies[0].replaceChildren();
    $('recent').replaceChildren();
    const updated = $('updated');
    updated.textContent = 'not loaded';
    delete updated.dataset.at;
  }

  function clearTimer() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
  }

  async function getJSON(path, token) {
    const resp = await fetch(path, {
      headers: { 'Authorization': 'Bearer ' + token, 'Accept': 'application/json' },
      cache: 'no-store', credentials: 'omit', redirect: 'error',
    });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const err = new Error((body && body.message) || ('HTTP ' + resp.status));
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  function el(ns, tag, attrs, text) {
    const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function drawCalendar(cal) {
    const svg = $('calendar-svg');
    svg.replaceChildren();
    const agents = Array.isArray(cal.agents) ? cal.agents : [];
    const hours = Number.isInteger(cal.hours) ? cal.hours : HOURS;
    const minutes = hours * 60;
    const from = Date.parse(cal.from);
    $('hours').textContent = String(hours);
    $('truncated').hidden = !cal.truncated;
    const empty = $('calendar-empty');
    let booked = 0;
    for (const ag of agents) booked += Array.isArray(ag.minutes) ? ag.minutes.length : 0;
    svg.setAttribute('width', 0);
    svg.setAttribute('height', 0);
    if (agents.length === 0) {
      empty.textContent = 'No agents yet: POST /agents registers one.';
      empty.hidden = false;
      return;
    }
    empty.textContent = 'No tickets booked in the next ' + hours + ' hours.';
    empty.hidden = booked > 0;

    const width = LABEL + minutes * CELL;
    const height = TOP + agents.length * ROW;
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
    svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
    for (let h = 0; h <= hours; h++) {
      const x = LABEL + h * 60 * CELL;
      svg.appendChild(el(SVG, 'line', { class: 'hour', x1: x, y1: TOP - 4, x2: x, y2: height }));
      if (h < hours) {
        const at = new Date(from + h * 3600000);
        const label = String(at.getHours()).padStart(2, '0') + ':' + String(at.getMinutes()).padStart(2, '0');
        svg.appendChild(el(SVG, 'text', { x: x + 2, y: TOP - 6 }, label));
      }
    }
    agents.forEach((ag, row) => {
      const y = TOP + row * ROW;
      const g = el(SVG, 'g', { class: 'agent', 'data-agent': ag.agent_id, 'data-status': ag.agent_status });
      const name = el(SVG, 'text', { x: 0, y: y + ROW - 5 }, ag.name + (ag.agent_status === 'available' ? '' : ' (' + ag.agent_status + ')'));
      name.appendChild(el(SVG, 'title', {}, ag.agent_id));
      g.appendChild(name);
      g.appendChild(el(SVG, 'rect', { class: 'free', x: LABEL, y: y + 1, width: minutes * CELL, height: ROW - 2 }));
      for (const m of (Array.isArray(ag.minutes) ? ag.minutes : [])) {
        const i = Math.round((Date.parse(m.minute) - from) / 60000);
        if (!(i >= 0 && i < minutes) || !TYPES.includes(m.ticket_type)) continue;
        const r = el(SVG, 'rect', { class: 'minute type-' + m.ticket_type, x: LABEL + i * CELL, y: y + 1, width: CELL, height: ROW - 2,
          'data-type': m.ticket_type, 'data-ticket': m.ticket_id, 'data-minute': m.minute });
        r.appendChild(el(SVG, 'title', {}, m.ticket_type + ' ' + m.ticket_id + ' at ' + m.minute + ', deadline ' + m.deadline));
        g.appendChild(r);
      }
      svg.appendChild(g);
    });
  }

  function drawCapacity(cap) {
    const body = $('capacity').tBodies[0];
    body.replaceChildren();
    for (const line of (Array.isArray(cap.capacity) ? cap.capacity : [])) {
      const tr = el(null, 'tr', { 'data-type': line.ticket_type });
      tr.appendChild(el(null, 'td', {}, line.ticket_type));
      tr.appendChild(el(null, 'td', { class: 'available' }, String(line.available)));
      tr.appendChild(el(null, 'td', {}, line.slot_time ? new Date(line.slot_time).toLocaleTimeString() : '-'));
      tr.appendChild(el(null, 'td', {}, line.agent_id || '-'));
      body.appendChild(tr);
    }
  }

  function drawRecent(rec) {
    const list = $('recent');
    list.replaceChildren();
    const decisions = Array.isArray(rec.decisions) ? rec.decisions : [];
    $('recent-empty').hidden = decisions.length > 0;
    for (const d of decisions) {
      const attrs = { 'data-outcome': d.outcome, 'data-type': d.ticket_type };
      if (d.ticket_id) attrs['data-ticket'] = d.ticket_id;
      if (d.code) attrs['data-code'] = d.code;
      const what = d.outcome === 'accepted' ? 'accepted ' + d.ticket_id : 'refused: ' + d.reason + ' (' + d.code + ')';
      list.appendChild(el(null, 'li', attrs, new Date(d.at).toLocaleTimeString() + '  ' + d.ticket_type + '  ' + what));
    }
  }

  async function refresh() {
    clearTimer();
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) { setState('login'); return; }
    const gen = ++generation;
    setState('loading');
    try {
      const [cal, cap, rec] = await Promise.all([
        getJSON('/calendar?hours=' + HOURS, token), getJSON('/capacity', token), getJSON('/admissions/recent', token)]);
      if (gen !== generation) return;
      drawCalendar(cal);
      drawCapacity(cap);
      drawRecent(rec);
      $('error').hidden = true;
      $('board').hidden = false;
      $('forget').hidden = false;
      const now = new Date();
      const updated = $('updated');
      updated.textContent = 'updated at ' + now.toLocaleTimeString();
      updated.dataset.at = now.toISOString();
      setState('ready');
    } catch (err) {
      if (gen !== generation) return;
      if (err.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        clearBoard();
        showError('token refused: log in (POST /login) and paste the new token');
        setState('refused');
        return;
      }
      showError('could not refresh (' + err.message + '); trying again');
      setState('error');
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener('DOMContentLoaded', () => {
    SVG = $('calendar-svg').namespaceURI;
    $('login').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $('token');
      const token = input.value.trim();
      input.value = '';
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      refresh();
    });
    $('forget').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      generation++;
      clearTimer();
      clearBoard();
      $('error').hidden = true;
      setState('login');
    });
    refresh();
  });
})();
