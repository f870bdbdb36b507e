// Tether's web tile page: one page for HQ and the edges, switching on the node's role.
// Everything comes from the node's API (/api/v1) and its live events (server-sent
// events at /api/v1/events); no framework, no build step, nothing from outside the node.
(() => {
  'use strict';

  const API = '/api/v1';
  const AGE_KEY = 'tether.tileAgeMinutes';
  const MAX_TILES = 150;
  const MAX_LOG = 400;
  const ASSET_POLL_MS = 5000;

  // Errors of the page itself, for whoever looks (the browser test checks it is empty).
  const pageErrors = [];
  window.tether = { errors: pageErrors };
  window.addEventListener('error', (e) => pageErrors.push(String(e.message || e)));
  // What the page's Content-Security-Policy refused: the policy and the page must agree.
  document.addEventListener('securitypolicyviolation', (e) =>
    pageErrors.push('content security policy: ' + e.violatedDirective + ' refused ' + e.blockedURI));
  window.addEventListener('unhandledrejection', (e) => {
    const r = e.reason;
    if (!(r && r.fromApi)) pageErrors.push(String((r && r.message) || r));
  });

  const S = {
    node: null,
    // What this browser may do here (GET /sign-in): null until asked.
    signIn: null,
    services: [],
    links: [],
    mirror: null,
    demo: null,
    // The bridge to NATS JetStream (its `bridge` events), where there is one.
    bridge: null,
    assets: new Map(),
    assetOrder: [],
    assetsLoaded: false,
    tiles: new Map(),
    restoreFilter: 'info',
    // HQ: edges whose every certificate is revoked, with when (from GET /edges and
    // revocations here); a link up since then has a new certificate.
    revoked: new Map(),
    // HQ: the fleet table's query (the node filters, sorts and pages) and last answer.
    fleet: { q: '', state: '', behind: '', sort: 'name', order: 'asc', offset: 0, view: null },
  };

  // HQ: more edge links than this are shown in the fleet table only, not as cards.
  const MAX_LINK_CARDS = 12;
  const FLEET_PAGE = 100;
  const FLEET_POLL_MS = 5000;

  // ---- small helpers ----

  const $ = (sel, root = document) => root.querySelector(sel);

  function h(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) if (kid != null && kid !== false) e.append(kid);
    return e;
  }

  function setText(e, text) {
    text = text == null ? '' : String(text);
    if (e && e.textContent !== text) e.textContent = text;
  }

  function setAttr(e, name, value) {
    if (value == null || value === false) {
      if (e.hasAttribute(name)) e.removeAttribute(name);
    } else {
      value = value === true ? '' : String(value);
      if (e.getAttribute(name) !== value) e.setAttribute(name, value);
    }
  }

  const sel = (v) => (window.CSS && CSS.escape ? CSS.escape(v) : String(v).replace(/["\\]/g, '\\$&'));

  function fmtBytes(n) {
    if (n == null) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }

  function fmtCount(n) {
    return n == null ? '–' : Number(n).toLocaleString('en');
  }

  function fmtDuration(ms) {
    if (ms == null) return '–';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min' + (s % 60 ? ' ' + (s % 60) + ' s' : '');
    const hours = Math.floor(m / 60);
    if (hours < 48) return hours + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
    return Math.floor(hours / 24) + ' days';
  }

  function fmtAgo(ms) {
    if (!ms) return '';
    const d = Date.now() - ms;
    if (d < 5000) return 'just now';
    return fmtDuration(d) + ' ago';
  }

  function fmtTime(ms) {
    if (!ms) return '–';
    const d = new Date(ms);
    const pad = (n) => String(n).padStart(2, '0');
    const time = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    if (Date.now() - ms < 20 * 3600 * 1000) return time;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + time;
  }

  function fmtRtt(ms) {
    if (ms == null) return '–';
    return (ms < 10 ? ms.toFixed(1) : String(Math.round(ms))) + ' ms';
  }

  // The colour of a state, by what it means to an operator.
  const TONES = {
    ok: ['running', 'up', 'elsewhere', 'done', 'connected', 'received', 'live', 'broadcast', 'downloaded', 'archived', 'ingested'],
    busy: ['planning', 'wanted', 'requested', 'ingesting', 'listed', 'connecting'],
    warn: ['paused', 'interrupted', 'reconnecting', 'ready', 'waiting'],
    bad: ['failed', 'down', 'not-found', 'download-failed', 'errored', 'error', 'disconnected'],
    info: ['available'],
  };
  function tone(state) {
    for (const [t, states] of Object.entries(TONES)) if (states.includes(state)) return t;
    return 'idle';
  }

  function setPill(e, state, label) {
    setText(e, label == null ? state : label);
    setAttr(e, 'data-state', state);
    setAttr(e, 'data-tone', tone(state));
  }

  // ---- errors banner ----

  let bannerTimer = 0;
  function showError(code, message, what) {
    const b = $('#banner');
    setAttr(b, 'data-code', code);
    setText($('#banner-code'), code);
    setText($('#banner-text'), message);
    setText($('#banner-what'), what || '');
    b.hidden = false;
    clearTimeout(bannerTimer);
    bannerTimer = setTimeout(hideError, 30000);
  }
  function hideError() {
    $('#banner').hidden = true;
  }

  // ---- the API ----

  // Calls the API; on an error, shows it in the banner (unless quiet) and throws.
  async function api(method, path, body, quiet) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    // A change says it comes from a program, not a web form (the node refuses forms).
    if (method !== 'GET') headers['X-Requested-With'] = 'tether-page';
    const what = method + ' ' + API + path;
    let res;
    try {
      res = await fetch(API + path, {
        method,
        headers,
        cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (!quiet) showError('unreachable', 'cannot reach the node: ' + e.message, what);
      throw Object.assign(new Error(e.message), { fromApi: true });
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      const err = (data && data.error) || { code: 'http-' + res.status, message: text || res.statusText };
      if (!quiet) showError(err.code, err.message, what);
      if (res.status === 401) signedOut();
      throw Object.assign(new Error(err.message), { fromApi: true, code: err.code, status: res.status });
    }
    return data;
  }

  // Live events seen, by kind.
  const eventsSeen = {};

  // Calls the API for an action whose answer is the node's state of `kind` (a service,
  // a link, the mirror): the answer, or undefined if a live event of that kind came
  // while the action was under way. Such an event may be newer than the answer, and the
  // node sends each state once, so a stale answer over it would stay on the page.
  async function answer(kind, method, path, body) {
    const before = eventsSeen[kind] || 0;
    const view = await api(method, path, body);
    return (eventsSeen[kind] || 0) === before ? view : undefined;
  }

  // Runs an operator's action from `button`: busy while it runs; errors are in the banner.
  async function act(button, fn) {
    if (button) {
      button.dataset.busy = 'true';
      button.disabled = true;
    }
    try {
      return await fn();
    } catch (e) {
      if (!(e && e.fromApi)) showError('page', String((e && e.message) || e));
      return undefined;
    } finally {
      if (button) {
        delete button.dataset.busy;
        button.disabled = false;
      }
      renderAll();
    }
  }

  // ---- the node ----

  function onNode(node) {
    const first = !S.node || S.node.role !== node.role;
    S.node = node;
    document.body.dataset.role = node.role;
    setText($('#node-name'), node.name);
    setText($('#node-role'), node.role === 'core' ? 'HQ' : 'Field edge');
    setAttr($('#node-role'), 'data-role', node.role);
    setText($('#node-version'), 'v' + node.version);
    document.title = node.name + ' · Tether ' + (node.role === 'core' ? 'HQ' : 'edge');
    setText($('#links-title'), node.role === 'core' ? 'Edge links' : 'Link to HQ');
    setText($('#tiles-title'), node.role === 'core' ? 'Tiles' : 'Tiles');
    $('#demo-panel').hidden = !node.demo_link;
    const cert = node.certificate;
    const certPill = $('#cert');
    certPill.hidden = !(cert && cert.expires_soon);
    if (cert) {
      setText(certPill, 'Certificate expires ' + fmtTime(cert.not_after_ms));
      certPill.title = "This node's certificate (serial " + cert.serial + ') expires soon: renew it. '
        + 'New files are picked up without a restart.';
    }
    if (node.role === 'core') {
      refreshEdges();
      refreshFleet();
      refreshCodes();
    }
    const debug = $('#debug-logs');
    if (node.log_filter == null) {
      debug.disabled = true;
      debug.title = "this node's logs are not reachable from its HTTP server";
      setText($('#log-note'), 'no log feed on this node');
    } else {
      debug.disabled = false;
      debug.title = 'log filter: ' + node.log_filter;
      renderFilter(node.log_filter);
    }
    if (first && node.role === 'edge') refreshAssets();
  }

  function renderFilter(filter) {
    const on = filter === 'debug' || filter === 'trace';
    if (!on) S.restoreFilter = filter;
    setAttr($('#debug-logs'), 'aria-checked', on ? 'true' : 'false');
    setAttr($('#debug-logs'), 'data-filter', filter);
    setText($('#log-note'), 'filter: ' + filter);
  }

  // ---- signing in ----

  // The node keeps the page's sign-in in an HttpOnly cookie: no script here ever holds
  // the token after signing in, and the live events (EventSource) carry the cookie.
  function renderSignIn(signIn) {
    S.signIn = signIn;
    const form = $('#token-form');
    form.hidden = !signIn.token_required;
    const access = signIn.access;
    const st = $('#token-state');
    setText(st, access === 'operate' ? 'signed in' : access === 'read' ? 'read only' : 'signed out');
    setAttr(st, 'data-state', access ? access : 'missing');
    $('#token').hidden = !!access;
    $('#token-save').hidden = !!access;
    $('#sign-out').hidden = !(access && signIn.token_required);
    form.classList.toggle('attention', !access);
  }

  function signedOut() {
    if (S.signIn && !S.signIn.access) return;
    renderSignIn({ token_required: true, access: null });
    if (source) source.close();
    source = null;
    setStream('connecting');
  }

  // Asks the node what this browser may do; connects when it may read.
  async function checkSignIn() {
    const signIn = await api('GET', '/sign-in', undefined, true);
    renderSignIn(signIn);
    if (signIn.access) {
      api('GET', '/node', undefined, true).then(onNode, () => {});
      if (!source) connect();
    }
    return signIn;
  }

  async function signIn(e) {
    e.preventDefault();
    const input = $('#token');
    const token = input.value.trim();
    if (!token) return;
    await act($('#token-save'), async () => {
      await api('POST', '/sign-in', { token });
      input.value = '';
      hideError();
      await checkSignIn();
    });
  }

  async function signOut() {
    await act($('#sign-out'), async () => {
      await api('DELETE', '/sign-in');
      signedOut();
    });
  }

  // ---- services ----

  function serviceRow(name) {
    const row = h('li', { class: 'service', dataset: { service: name } },
      h('button', {
        type: 'button', class: 'switch', role: 'switch', 'aria-checked': 'false',
        'aria-label': 'Run ' + name, dataset: { action: 'toggle' },
        onclick: (e) => toggleService(name, e.currentTarget),
      }, h('span', { class: 'knob' })),
      h('div', { class: 'svc-main' },
        h('div', { class: 'svc-head' },
          h('span', { class: 'svc-name', text: name }),
          h('span', { class: 'pill', dataset: { field: 'state' } })),
        h('div', { class: 'svc-desc', dataset: { field: 'description' } }),
        h('div', { class: 'error-text', dataset: { field: 'error' }, hidden: true }),
        h('div', { class: 'svc-problem', dataset: { field: 'problem' }, hidden: true }),
        h('div', { class: 'svc-stats' },
          h('span', {}, h('b', { dataset: { counter: 'processed' }, text: '0' }), ' processed'),
          h('span', {}, h('b', { dataset: { counter: 'failed' }, text: '0' }), ' failed'),
          h('span', {}, h('b', { dataset: { counter: 'restarts' }, text: '0' }), ' restarts'),
          h('span', { class: 'svc-last', dataset: { field: 'last' } })),
        h('form', {
          class: 'svc-delay', novalidate: true,
          onsubmit: (e) => {
            e.preventDefault();
            setDelay(name, e.currentTarget);
          },
        },
        h('label', {}, 'Delay ',
          h('input', {
            type: 'number', min: '0', step: '1', inputmode: 'numeric',
            placeholder: '0', dataset: { field: 'delay' }, 'aria-label': 'Processing delay of ' + name + ' in ms',
          }), ' ms'),
        h('button', { type: 'submit', class: 'btn small', dataset: { action: 'delay' }, text: 'Set' }),
        h('span', { class: 'svc-delay-now', dataset: { field: 'delay-now' } }))));
    return row;
  }

  function renderServices() {
    const ul = $('#services');
    const seen = new Set();
    for (const s of S.services) {
      seen.add(s.name);
      let row = ul.querySelector('[data-service="' + sel(s.name) + '"]');
      if (!row) {
        row = serviceRow(s.name);
        ul.append(row);
      }
      const on = s.state === 'running' || s.state === 'failed';
      setAttr(row, 'data-state', s.state);
      const sw = row.querySelector('[data-action="toggle"]');
      setAttr(sw, 'aria-checked', on ? 'true' : 'false');
      setPill(row.querySelector('[data-field="state"]'), s.state);
      setText(row.querySelector('[data-field="description"]'), s.description);
      const err = row.querySelector('[data-field="error"]');
      err.hidden = s.state !== 'failed';
      setText(err, s.state === 'failed' ? s.error || 'failed' : '');
      const problem = row.querySelector('[data-field="problem"]');
      problem.hidden = !s.last_problem;
      setText(problem, s.last_problem ? 'Last problem: ' + s.last_problem : '');
      setText(row.querySelector('[data-counter="processed"]'), fmtCount(s.processed));
      setText(row.querySelector('[data-counter="failed"]'), fmtCount(s.failed));
      setText(row.querySelector('[data-counter="restarts"]'), fmtCount(s.restarts));
      setAttr(row.querySelector('[data-counter="failed"]'), 'data-nonzero', s.failed > 0);
      setText(row.querySelector('[data-field="last"]'), s.last_activity_ms ? 'last ' + fmtAgo(s.last_activity_ms) : '');
      setText(row.querySelector('[data-field="delay-now"]'), s.delay_ms ? 'current ' + fmtCount(s.delay_ms) + ' ms' : 'no delay');
      setAttr(row.querySelector('[data-field="delay-now"]'), 'data-nonzero', s.delay_ms > 0);
    }
    for (const row of [...ul.children]) if (!seen.has(row.dataset.service)) row.remove();
    $('#services-empty').hidden = S.services.length > 0;
    if (S.node) setText($('#services-empty'), 'No services on this node.');
    const running = S.services.filter((s) => s.state === 'running').length;
    setText($('#services-note'), S.services.length ? running + ' of ' + S.services.length + ' running' : '');
  }

  function updateService(status) {
    if (!status || !status.name) return;
    const i = S.services.findIndex((s) => s.name === status.name);
    if (i >= 0) S.services[i] = status;
    else S.services.push(status);
  }

  function toggleService(name, button) {
    const s = S.services.find((x) => x.name === name);
    const on = s && (s.state === 'running' || s.state === 'failed');
    act(button, async () => {
      updateService(await answer('services', 'POST', '/services/' + encodeURIComponent(name) + (on ? '/stop' : '/start')));
    });
  }

  function setDelay(name, form) {
    const input = form.querySelector('[data-field="delay"]');
    const raw = input.value.trim();
    const ms = Number(raw === '' ? 0 : raw);
    if (!Number.isInteger(ms) || ms < 0) {
      showError('bad-input', 'the delay is a whole number of milliseconds, 0 or more', name);
      return;
    }
    act(form.querySelector('button'), async () => {
      updateService(await answer('services', 'POST', '/services/' + encodeURIComponent(name) + '/delay', { delay_ms: ms }));
      input.value = '';
    });
  }

  // ---- links ----

  function linkRow(peer) {
    return h('div', { class: 'link', dataset: { link: peer } },
      h('div', { class: 'link-head' },
        h('span', { class: 'link-name', text: peer }),
        h('span', { class: 'pill', dataset: { field: 'state' } }),
        h('span', { class: 'link-since', dataset: { field: 'since' } })),
      h('dl', { class: 'stats' },
        h('div', {}, h('dt', { text: 'RTT', title: 'round trip time' }), h('dd', { dataset: { field: 'rtt' } })),
        h('div', {}, h('dt', { text: 'Backlog', title: 'entries waiting to be sent' }), h('dd', { dataset: { field: 'backlog' } })),
        h('div', {}, h('dt', { text: 'Sent' }), h('dd', { dataset: { field: 'bytes-out' } })),
        h('div', {}, h('dt', { text: 'Received' }), h('dd', { dataset: { field: 'bytes-in' } }))),
      h('div', { class: 'link-note', dataset: { field: 'note' } }),
      h('div', { class: 'buttons' },
        h('button', {
          type: 'button', class: 'btn big', dataset: { action: 'pause' }, text: 'Pause',
          onclick: (e) => linkAction(peer, 'pause', e.currentTarget),
        }),
        h('button', {
          type: 'button', class: 'btn big', dataset: { action: 'resume' }, text: 'Resume',
          onclick: (e) => linkAction(peer, 'resume', e.currentTarget),
        }),
        h('button', {
          type: 'button', class: 'btn big danger', dataset: { action: 'revoke' }, text: 'Revoke',
          title: "Revoke this edge's certificate: its link closes now, and it cannot connect again "
            + 'until it has a new certificate. Click twice to confirm.',
          onclick: (e) => revokeEdge(peer, e.currentTarget),
        })));
  }

  // HQ: which edges are revoked, for the link cards.
  async function refreshEdges() {
    try {
      const edges = await api('GET', '/edges', undefined, true);
      S.revoked = new Map(edges.map((e) => [e.name, revokedAt(e)]).filter(([, at]) => at != null));
      renderLinks();
    } catch (_) {
      // Shown again at the next node event.
    }
  }

  // A destructive action: the first click asks, the second (within 5 s) revokes.
  function revokeEdge(peer, button) {
    if (!button.dataset.confirm) {
      button.dataset.confirm = '1';
      button.textContent = 'Confirm revoke';
      setTimeout(() => {
        delete button.dataset.confirm;
        button.textContent = 'Revoke';
      }, 5000);
      return;
    }
    delete button.dataset.confirm;
    button.textContent = 'Revoke';
    act(button, async () => {
      const edge = await api('POST', '/edges/' + encodeURIComponent(peer) + '/revoke');
      const at = edge && revokedAt(edge);
      if (at != null) S.revoked.set(edge.name, at);
    });
  }

  // When an edge's last certificate was revoked, if all of them are.
  function revokedAt(edge) {
    const certs = edge.certificates || [];
    if (certs.length === 0 || certs.some((c) => c.revoked_ms == null)) return null;
    return Math.max(...certs.map((c) => c.revoked_ms));
  }

  function renderLinks() {
    const box = $('#links');
    const seen = new Set();
    const core = S.node && S.node.role === 'core';
    // HQ with a fleet: the cards would be a wall; the fleet table shows every edge.
    const cards = core && S.links.length > MAX_LINK_CARDS ? [] : S.links;
    for (const l of cards) {
      seen.add(l.peer);
      let row = box.querySelector('[data-link="' + sel(l.peer) + '"]');
      if (!row) {
        row = linkRow(l.peer);
        box.append(row);
      }
      setAttr(row, 'data-state', l.state);
      setAttr(row, 'data-paused-here', l.paused_here);
      setPill(row.querySelector('[data-field="state"]'), l.state);
      setText(row.querySelector('[data-field="since"]'), (l.connected ? 'up since ' : 'down since ') + fmtTime(l.since_ms));
      setText(row.querySelector('[data-field="rtt"]'), l.connected ? fmtRtt(l.rtt_ms) : '–');
      setText(row.querySelector('[data-field="backlog"]'), fmtCount(l.backlog));
      setAttr(row.querySelector('[data-field="backlog"]'), 'data-nonzero', l.backlog > 0);
      setText(row.querySelector('[data-field="bytes-out"]'), fmtBytes(l.bytes_out));
      setText(row.querySelector('[data-field="bytes-in"]'), fmtBytes(l.bytes_in));
      const notes = [];
      if (l.paused_here) notes.push('Paused here: nothing is sent or received until you resume.');
      if (l.paused_by_peer) notes.push('Paused by ' + l.peer + '.');
      // Up since the revocation: admitted with a new certificate.
      if (l.connected && l.since_ms > (S.revoked.get(l.peer) || Infinity)) S.revoked.delete(l.peer);
      const revoked = S.revoked.has(l.peer);
      if (revoked) notes.push('Certificate revoked: ' + l.peer + ' cannot connect until it has a new certificate.');
      else if (!l.connected) notes.push('Store and forward: entries wait here until the link returns.');
      if (l.backlog_in > 0) notes.push(l.peer + ' holds ' + fmtCount(l.backlog_in) + ' entries (' + fmtBytes(l.backlog_in_bytes) + ') for this node.');
      if (l.clock_skewed) notes.push(clockNote(l.peer, l.clock_offset_ms));
      setText(row.querySelector('[data-field="note"]'), notes.join(' '));
      setAttr(row, 'data-revoked', revoked);
      const pause = row.querySelector('[data-action="pause"]');
      const resume = row.querySelector('[data-action="resume"]');
      const revoke = row.querySelector('[data-action="revoke"]');
      if (!pause.dataset.busy) pause.disabled = l.paused_here;
      if (!resume.dataset.busy) resume.disabled = !l.paused_here;
      revoke.hidden = !(S.node && S.node.role === 'core');
      if (!revoke.dataset.busy) revoke.disabled = revoked;
    }
    for (const row of [...box.children]) if (!seen.has(row.dataset.link)) row.remove();
    $('#links-empty').hidden = cards.length > 0;
    setText($('#links-empty'), !core ? 'No link to HQ yet.'
      : S.links.length ? S.links.length + ' edge links: see the Fleet table.' : 'No edge has connected yet.');
    const up = S.links.filter((l) => l.state === 'up').length;
    setText($('#links-note'), S.links.length > 1 ? up + ' of ' + S.links.length + ' up' : '');
  }

  // "alpha's clock is 3 h ahead of this node's: ...", for offsets past the tolerance.
  function clockNote(peer, offsetMs) {
    const how = offsetMs > 0 ? ' ahead of ' : ' behind ';
    return 'Clock: ' + peer + "'s clock is " + fmtDuration(Math.abs(offsetMs)) + how +
      "this node's. Set both from one time source: entries carry their origin's time, and certificates are checked against it.";
  }

  function linkAction(peer, action, button) {
    act(button, async () => {
      const view = await answer('links', 'POST', '/links/' + encodeURIComponent(peer) + '/' + action);
      if (view && view.peer) {
        const i = S.links.findIndex((l) => l.peer === view.peer);
        if (i >= 0) S.links[i] = view;
      }
    });
  }

  // ---- the fleet (HQ) ----

  // Asks the node for the table as the filters, sort and page say; stale answers (a
  // newer request went out meanwhile) are dropped.
  let fleetAsked = 0;
  async function refreshFleet() {
    if (!S.node || S.node.role !== 'core' || !(S.signIn && S.signIn.access)) return;
    const f = S.fleet;
    const query = new URLSearchParams({ sort: f.sort, order: f.order, limit: String(FLEET_PAGE), offset: String(f.offset) });
    if (f.q) query.set('q', f.q);
    if (f.state) query.set('state', f.state);
    if (f.behind) query.set('behind_s', f.behind);
    const asked = ++fleetAsked;
    try {
      const view = await api('GET', '/fleet?' + query.toString(), undefined, true);
      if (asked !== fleetAsked) return;
      S.fleet.view = view;
      renderFleet();
    } catch (_) {
      // Asked again at the next poll.
    }
  }

  function fleetCell(field) {
    return h('td', { dataset: { field } });
  }

  function fleetRow(name) {
    return h('tr', { dataset: { edge: name } },
      h('td', { class: 'fleet-name', text: name }),
      h('td', {}, h('span', { class: 'pill', dataset: { field: 'state' } })),
      fleetCell('last-seen'), fleetCell('rtt'), fleetCell('backlog'), fleetCell('backlog-in'),
      fleetCell('behind'), fleetCell('gaps'), fleetCell('expiry'), fleetCell('clock'));
  }

  function renderFleet() {
    const view = S.fleet.view;
    if (!view) return;
    const body = $('#fleet-rows');
    const rows = new Map([...body.children].map((r) => [r.dataset.edge, r]));
    let previous = null;
    for (const e of view.edges) {
      let row = rows.get(e.name);
      rows.delete(e.name);
      if (!row) row = fleetRow(e.name);
      // In the node's order: moved only when out of place.
      const want = previous ? previous.nextSibling : body.firstChild;
      if (row !== want) body.insertBefore(row, want);
      previous = row;
      setAttr(row, 'data-state', e.state);
      // Linked to another core of HQ: shown as "at <core>".
      setPill(row.querySelector('[data-field="state"]'), e.state, e.core ? 'at ' + e.core : null);
      const live = e.state === 'up' || e.state === 'paused';
      setText(row.querySelector('[data-field="last-seen"]'), live ? 'now' : e.last_seen_ms ? fmtAgo(e.last_seen_ms) : 'never');
      setText(row.querySelector('[data-field="rtt"]'), live ? fmtRtt(e.rtt_ms) : '–');
      const b = e.backlog_out;
      const backlog = row.querySelector('[data-field="backlog"]');
      setText(backlog, b ? fmtCount(b.entries) + ' · ' + fmtBytes(b.bytes) : '–');
      setAttr(backlog, 'data-nonzero', !!(b && b.entries > 0));
      setAttr(backlog, 'title', 'Entries HQ holds that ' + e.name + ' has not acknowledged (bytes estimated)');
      const i = e.backlog_in;
      const backlogIn = row.querySelector('[data-field="backlog-in"]');
      setText(backlogIn, i ? fmtCount(i.entries) + ' · ' + fmtBytes(i.bytes) : '–');
      setAttr(backlogIn, 'data-nonzero', !!(i && i.entries > 0));
      setAttr(backlogIn, 'title', 'Entries ' + e.name + ' last said it holds for HQ, not yet acknowledged');
      const behind = row.querySelector('[data-field="behind"]');
      setText(behind, e.behind_ms > 0 ? fmtDuration(e.behind_ms) : '–');
      setAttr(behind, 'data-nonzero', e.behind_ms > 0);
      const gaps = row.querySelector('[data-field="gaps"]');
      setText(gaps, fmtCount(e.gaps));
      setAttr(gaps, 'data-nonzero', e.gaps > 0);
      const expiry = row.querySelector('[data-field="expiry"]');
      const left = e.certificate_expiry_ms == null ? null : e.certificate_expiry_ms - Date.now();
      setText(expiry, left == null ? '–' : left <= 0 ? 'expired' : 'in ' + fmtDuration(left));
      setAttr(expiry, 'data-nonzero', left != null && left < 14 * 24 * 3600 * 1000);
      const clock = row.querySelector('[data-field="clock"]');
      const off = e.clock_offset_ms;
      setText(clock, off == null ? '–' : e.clock_skewed ? (off > 0 ? '+' : '−') + fmtDuration(Math.abs(off)) : 'ok');
      setAttr(clock, 'data-nonzero', e.clock_skewed);
      setAttr(clock, 'title', e.clock_skewed ? clockNote(e.name, off) : "Within 2 minutes of HQ's clock at its last hello");
    }
    for (const row of rows.values()) row.remove();
    $('#fleet-empty').hidden = view.edges.length > 0;
    const counts = view.states.filter((s) => s.edges > 0).map((s) => fmtCount(s.edges) + ' ' + s.state);
    setText($('#fleet-note'), fmtCount(view.total) + ' edges' + (counts.length ? ': ' + counts.join(', ') : ''));
    const first = view.edges.length ? view.offset + 1 : 0;
    setText($('#fleet-page'), first + '–' + (view.offset + view.edges.length) + ' of ' + fmtCount(view.matched));
    $('#fleet-prev').disabled = view.offset === 0;
    $('#fleet-next').disabled = view.offset + view.edges.length >= view.matched;
    for (const th of document.querySelectorAll('#fleet-table th')) {
      const on = th.dataset.sort === S.fleet.sort;
      setAttr(th, 'aria-sort', on ? (S.fleet.order === 'asc' ? 'ascending' : 'descending') : null);
    }
  }

  // The columns that read best biggest first start descending, as the node's default.
  const DESCENDING_FIRST = ['since', 'rtt', 'backlog', 'backlog_in', 'behind', 'gaps', 'clock'];

  function initFleet() {
    let typing = 0;
    const changed = () => {
      S.fleet.offset = 0;
      refreshFleet();
    };
    $('#fleet-q').addEventListener('input', (e) => {
      S.fleet.q = e.currentTarget.value.trim();
      clearTimeout(typing);
      typing = setTimeout(changed, 250);
    });
    $('#fleet-filter').addEventListener('submit', (e) => e.preventDefault());
    $('#fleet-state').addEventListener('change', (e) => {
      S.fleet.state = e.currentTarget.value;
      changed();
    });
    $('#fleet-behind').addEventListener('change', (e) => {
      S.fleet.behind = e.currentTarget.value;
      changed();
    });
    for (const th of document.querySelectorAll('#fleet-table th')) {
      th.querySelector('button').addEventListener('click', () => {
        const sort = th.dataset.sort;
        if (S.fleet.sort === sort) S.fleet.order = S.fleet.order === 'asc' ? 'desc' : 'asc';
        else S.fleet.order = DESCENDING_FIRST.includes(sort) ? 'desc' : 'asc';
        S.fleet.sort = sort;
        changed();
      });
    }
    $('#fleet-prev').addEventListener('click', () => {
      S.fleet.offset = Math.max(0, S.fleet.offset - FLEET_PAGE);
      refreshFleet();
    });
    $('#fleet-next').addEventListener('click', () => {
      S.fleet.offset += FLEET_PAGE;
      refreshFleet();
    });
    setInterval(refreshFleet, FLEET_POLL_MS);
  }

  // ---- enrollment codes (HQ) ----

  async function refreshCodes() {
    if (!S.node || S.node.role !== 'core' || !(S.signIn && S.signIn.access)) return;
    try {
      renderCodes(await api('GET', '/enrollments', undefined, true));
    } catch (_) {
      // Asked again at the next poll.
    }
  }

  function renderCodes(codes) {
    const body = $('#enroll-rows');
    body.replaceChildren(...codes.map((c) => h('tr', { dataset: { code: c.id, state: c.state } },
      h('td', { text: c.id }),
      h('td', {}, h('span', { class: 'pill', 'data-tone': c.state === 'active' ? 'ok' : c.state === 'revoked' ? 'bad' : 'idle', text: c.state })),
      h('td', { text: c.enrolled.length + ' of ' + c.uses }),
      h('td', { text: c.names.length ? c.names.join(', ') : 'any new name' }),
      h('td', { text: fmtTime(c.expires_ms) }),
      h('td', { text: c.enrolled.map((e) => e.name).join(', ') || '–' }),
      h('td', {}, c.state === 'active' ? h('button', {
        type: 'button', class: 'btn small danger', dataset: { action: 'revoke-code' }, text: 'Revoke',
        onclick: (e) => act(e.currentTarget, async () => {
          await api('POST', '/enrollments/' + encodeURIComponent(c.id) + '/revoke');
          await refreshCodes();
        }),
      }) : null))));
    const active = codes.filter((c) => c.state === 'active').length;
    setText($('#enroll-note'), codes.length ? active + ' active of ' + codes.length : '');
  }

  function initEnroll() {
    $('#enroll-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const uses = Number($('#enroll-uses').value || 1);
      const names = $('#enroll-names').value.split(',').map((n) => n.trim()).filter((n) => n);
      const body = { uses, expires_in_s: Number($('#enroll-expires').value) };
      if (names.length) body.names = names;
      act($('#enroll-create'), async () => {
        const made = await api('POST', '/enrollments', body);
        setText($('#enroll-code-text'), made.code);
        $('#enroll-code').hidden = false;
        await refreshCodes();
      });
    });
    setInterval(refreshCodes, 15000);
  }

  // ---- mirror ----

  function renderMirror() {
    const m = S.mirror;
    if (!m) return;
    const box = $('#mirror');
    setAttr(box, 'data-state', m.state);
    setAttr(box, 'data-started', m.started);
    setPill($('#mirror-state'), m.state);
    const pct = Math.max(0, Math.min(100, Number(m.percent) || 0));
    const bar = $('#mirror-progress');
    setAttr(bar, 'aria-valuenow', pct.toFixed(0));
    setAttr(bar, 'data-percent', pct.toFixed(0));
    setAttr(bar, 'data-tone', tone(m.state));
    bar.firstElementChild.style.width = pct + '%';
    setText($('#mirror-percent'), (pct >= 10 || pct === 0 ? pct.toFixed(0) : pct.toFixed(1)) + ' %');
    const active = m.state === 'running' || m.state === 'planning';
    setText($('#mirror-rate'), active && m.rate_bytes_per_second > 0 ? fmtBytes(m.rate_bytes_per_second) + '/s' : '');
    setText($('#mirror-eta'), active && m.eta_ms != null ? fmtDuration(m.eta_ms) + ' left' : '');
    setText($('#mirror-files'), m.files_todo || m.files_done ? fmtCount(m.files_done) + ' / ' + fmtCount(m.files_todo) : '–');
    // Bytes verified of those to fetch; while running, also the bytes arrived, chunks
    // part way across included (on a slow radio one chunk takes a minute).
    const arrived = active && m.bytes_arrived > m.bytes_done ? ' (' + fmtBytes(m.bytes_arrived) + ' arrived)' : '';
    setText($('#mirror-bytes'), m.bytes_todo || m.bytes_done ? fmtBytes(m.bytes_done) + ' / ' + fmtBytes(m.bytes_todo) + arrived : '–');
    setText($('#mirror-link-bytes'), fmtBytes(m.bytes_on_link));
    setText($('#mirror-reused'), fmtBytes(m.bytes_reused));
    const last = $('#mirror-last-success');
    if (m.last_success_ms) {
      setText(last, fmtTime(m.last_success_ms) + ' (' + fmtAgo(m.last_success_ms) + ')');
      setAttr(last, 'data-ms', m.last_success_ms);
      setAttr(last, 'title', m.last_success_version != null ? 'volume version ' + m.last_success_version : null);
    } else {
      setText(last, 'never');
      setAttr(last, 'data-ms', null);
    }
    const err = $('#mirror-error');
    err.hidden = !m.last_error;
    setText(err, m.last_error ? 'Last error: ' + m.last_error : '');
    const start = $('#mirror-start');
    const stop = $('#mirror-stop');
    if (!start.dataset.busy) start.disabled = m.started && active;
    if (!stop.dataset.busy) stop.disabled = !m.started;
    setText(start, m.started && active ? 'Mirroring…' : 'Mirror');
  }

  function mirrorAction(action, button) {
    act(button, async () => {
      const view = await answer('mirror', 'POST', '/mirror/' + action);
      if (view && view.state) S.mirror = view;
    });
  }

  // ---- the bridge to NATS JetStream ----

  function renderBridge() {
    const b = S.bridge;
    $('#bridge-panel').hidden = !b;
    if (!b) return;
    setPill($('#bridge-state'), b.connected ? 'connected' : 'disconnected');
    setText($('#bridge-servers'), 'NATS ' + b.servers.join(', ') + (b.connected ? '' : ': ' + (b.error || 'connecting')));
    const ul = $('#bridge');
    const rows = b.mappings.map((m) => {
      const key = m.direction + ':' + m.topic;
      let row = ul.querySelector('[data-mapping="' + sel(key) + '"]');
      if (!row) {
        row = h('li', { class: 'service', dataset: { mapping: key } },
          h('div', { class: 'svc-main' },
            h('div', { class: 'svc-head' },
              h('span', { class: 'svc-name', dataset: { field: 'way' } }),
              h('span', { class: 'pill', dataset: { field: 'state' } })),
            h('div', { class: 'svc-desc', dataset: { field: 'subjects' } }),
            h('div', { class: 'svc-stats' },
              h('span', {}, h('b', { dataset: { counter: 'carried' }, text: '0' }), ' carried'),
              h('span', { dataset: { field: 'lag' } })),
            h('div', { class: 'error-text', dataset: { field: 'error' }, hidden: true })));
      }
      setAttr(row, 'data-state', m.state);
      // `out` and `in` for the bridge, `backbone out` and `backbone in` between cores.
      const out = m.direction.endsWith('out');
      const via = m.direction.startsWith('backbone') ? 'backbone: ' : '';
      setText(row.querySelector('[data-field="way"]'), via + (out
        ? m.topic + ' → ' + m.stream : m.stream + ' → ' + m.topic));
      setPill(row.querySelector('[data-field="state"]'), m.state);
      setText(row.querySelector('[data-field="subjects"]'), m.subjects);
      setText(row.querySelector('[data-counter="carried"]'), fmtCount(m.carried));
      setAttr(row.querySelector('[data-field="lag"]'), 'data-lag', out ? String(m.lag_entries) : null);
      setText(row.querySelector('[data-field="lag"]'), out
        ? fmtCount(m.lag_entries) + ' waiting' + (m.lag_entries ? ' (oldest ' + fmtDuration(m.lag_ms) + ')' : '')
        : fmtCount(m.refused) + ' refused');
      const err = row.querySelector('[data-field="error"]');
      err.hidden = !m.last_error;
      setText(err, m.last_error ? 'Last error: ' + m.last_error : '');
      return row;
    });
    ul.replaceChildren(...rows);
  }

  // ---- demo link ----

  function renderDemo() {
    const d = S.demo;
    if (!d) return;
    const select = $('#demo-profile');
    const names = d.profiles || [];
    if ([...select.options].map((o) => o.value).join() !== names.join()) {
      select.replaceChildren(...names.map((n) => h('option', { value: n, text: n })));
    }
    if (document.activeElement !== select) select.value = d.profile;
    setAttr(select, 'data-profile', d.profile);
    const sw = $('#demo-up');
    setAttr(sw, 'aria-checked', d.up ? 'true' : 'false');
    setText($('#demo-up-label'), d.up ? 'Link up' : 'Link down');
    setPill($('#demo-state'), d.up ? 'up' : 'down', (d.up ? 'up' : 'down') + ' · ' + d.profile);
  }

  function demoSet(body, control) {
    act(control, async () => {
      const status = await answer('demo-link', 'POST', '/demo-link', body);
      if (status && status.profiles) S.demo = status;
    });
  }

  // ---- assets (edge) ----

  const ASSET_HINTS = {
    available: 'Tap to request',
    wanted: 'Asking HQ…',
    requested: 'Waiting for HQ…',
    ready: 'Ready at HQ: press Mirror',
    received: 'Received',
    'not-found': 'Not found at HQ · tap to retry',
  };

  function assetCard(id) {
    const card = h('article', {
      class: 'asset', dataset: { asset: id }, tabindex: '0', role: 'button',
      onclick: () => requestAsset(id),
      onkeydown: (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          requestAsset(id);
        }
      },
    },
    h('div', { class: 'media' }),
    h('div', { class: 'asset-body' },
      h('div', { class: 'asset-title', dataset: { field: 'title' } }),
      h('div', { class: 'asset-meta' },
        h('span', { class: 'pill', dataset: { field: 'state' } }),
        h('span', { class: 'asset-size', dataset: { field: 'size' } })),
      h('div', { class: 'asset-hint', dataset: { field: 'hint' } })));
    return card;
  }

  function setMedia(box, image, preview, alt) {
    // The image if there is one (over its preview while it loads), else the preview.
    const previewUrl = previewURL(preview);
    const key = (image || '') + '|' + (previewUrl ? preview : '');
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren();
    box.style.backgroundImage = previewUrl ? 'url("' + previewUrl + '")' : '';
    box.classList.toggle('placeholder', !image && !previewUrl);
    if (image) {
      box.append(h('img', { class: 'media-image', src: '/files/' + image.split('/').map(encodeURIComponent).join('/'), alt: alt || '', decoding: 'async' }));
    } else if (previewUrl) {
      box.append(h('img', { class: 'media-preview', src: previewUrl, alt: alt ? 'Preview of ' + alt : '' }));
    }
  }

  function renderAssets() {
    const box = $('#assets');
    const cards = new Map([...box.children].map((c) => [c.dataset.asset, c]));
    let prev = null;
    for (const id of S.assetOrder) {
      const a = S.assets.get(id);
      if (!a) continue;
      let card = cards.get(id);
      if (!card) card = assetCard(id);
      cards.delete(id);
      // Keep the order: newest first.
      const want = prev ? prev.nextSibling : box.firstChild;
      if (want !== card) box.insertBefore(card, want);
      prev = card;
      const state = a.state || 'available';
      setAttr(card, 'data-state', state);
      const requestable = state === 'available' || state === 'not-found';
      setAttr(card, 'data-requestable', requestable);
      setAttr(card, 'aria-disabled', requestable ? null : 'true');
      setText(card.querySelector('[data-field="title"]'), a.title || id);
      setAttr(card, 'title', (a.title || id) + (a.description ? '\n' + a.description : ''));
      setPill(card.querySelector('[data-field="state"]'), state);
      const dims = a.width && a.height ? a.width + '×' + a.height + ' · ' : '';
      setText(card.querySelector('[data-field="size"]'), a.size != null ? dims + fmtBytes(a.size) : dims.replace(/ · $/, ''));
      const hint = state === 'not-found' && a.error ? 'Not found: ' + a.error + ' · tap to retry' : ASSET_HINTS[state] || '';
      setText(card.querySelector('[data-field="hint"]'), hint);
      const image = state === 'received' && a.path ? 'mirror/' + a.path : null;
      setMedia(card.querySelector('.media'), image, a.preview, a.title);
    }
    for (const card of cards.values()) card.remove();
    $('#assets-empty').hidden = S.assets.size > 0;
    const received = [...S.assets.values()].filter((a) => a.state === 'received').length;
    setText($('#assets-note'), S.assets.size ? S.assets.size + ' assets · ' + received + ' received' : '');
  }

  function takeAssets(list) {
    const ids = new Set();
    const fresh = [];
    for (const a of list) {
      if (!a || typeof a.id !== 'string') continue;
      ids.add(a.id);
      if (!S.assets.has(a.id)) fresh.push(a.id);
      S.assets.set(a.id, a);
    }
    for (const id of [...S.assets.keys()]) if (!ids.has(id)) S.assets.delete(id);
    // New ones first (the table lists by id; its last ones are the newest in the feed).
    S.assetOrder = fresh.reverse().concat(S.assetOrder.filter((id) => ids.has(id) && !fresh.includes(id)));
    S.assetsLoaded = true;
    renderAssets();
    previewTiles();
  }

  let assetsBusy = false;
  let assetsAgain = false;
  let assetsTimer = 0;
  async function refreshAssets() {
    if (!S.node || S.node.role !== 'edge' || !(S.signIn && S.signIn.access)) return;
    if (assetsBusy) {
      assetsAgain = true;
      return;
    }
    assetsBusy = true;
    try {
      takeAssets(await api('GET', '/assets', undefined, true));
    } catch (_) {
      // The stream's state says the node is away; the next poll tries again.
    } finally {
      assetsBusy = false;
      if (assetsAgain) {
        assetsAgain = false;
        refreshAssets();
      }
    }
  }
  function refreshAssetsSoon() {
    clearTimeout(assetsTimer);
    assetsTimer = setTimeout(refreshAssets, 150);
  }

  function requestAsset(id) {
    const a = S.assets.get(id);
    if (!a || !(a.state === 'available' || a.state === 'not-found' || !a.state)) return;
    const card = $('#assets [data-asset="' + sel(id) + '"]');
    if (card) card.classList.add('busy');
    act(null, async () => {
      try {
        const r = await api('POST', '/assets/' + encodeURIComponent(id) + '/request');
        if (r && r.state) S.assets.set(id, Object.assign({}, S.assets.get(id), { state: r.state }));
      } finally {
        if (card) card.classList.remove('busy');
        refreshAssetsSoon();
      }
    });
  }

  // ---- tiles ----

  function tileAgeMinutes() {
    const v = Number($('#tile-age').value);
    return Number.isFinite(v) ? v : 15;
  }

  function addTile(t) {
    if (t == null || typeof t.offset !== 'number' || S.tiles.has(t.offset)) return;
    const age = tileAgeMinutes();
    if (age > 0 && Date.now() - t.time_ms > age * 60000) return;
    const media = h('div', { class: 'media' });
    const tile = h('article', {
      class: 'tile',
      dataset: { offset: String(t.offset), service: t.service, asset: t.asset || null, time: String(t.time_ms) },
    },
    media,
    h('div', { class: 'tile-body' },
      h('div', { class: 'tile-title', text: t.title }),
      h('div', { class: 'tile-text', text: t.text }),
      h('div', { class: 'tile-foot' },
        h('span', { class: 'tile-service', text: t.service }),
        h('time', { datetime: new Date(t.time_ms).toISOString(), text: fmtTime(t.time_ms) }))));
    if (!t.asset) delete tile.dataset.asset;
    const known = t.asset ? S.assets.get(t.asset) : null;
    const preview = t.preview || (known && known.preview) || null;
    if (t.image || preview) {
      setMedia(media, t.image || null, preview, t.title);
      if (t.image) tile.classList.add('has-image');
    } else {
      placeholder(media, t.service);
    }
    // Newest first: by offset.
    const box = $('#tiles');
    let before = box.firstElementChild;
    while (before && Number(before.dataset.offset) > t.offset) before = before.nextElementSibling;
    box.insertBefore(tile, before);
    S.tiles.set(t.offset, tile);
    while (box.children.length > MAX_TILES) {
      const last = box.lastElementChild;
      S.tiles.delete(Number(last.dataset.offset));
      last.remove();
    }
    renderTilesNote();
    if (t.asset && S.node && S.node.role === 'edge') refreshAssetsSoon();
  }

  // A tile without a picture: its service's initials on its service's colour.
  function placeholder(media, service) {
    media.classList.add('placeholder');
    let hash = 0;
    for (const c of service) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
    media.style.setProperty('--hue', String(hash % 360));
    media.append(h('span', { class: 'glyph', text: glyph(service) }));
  }

  // Tiles of assets shown before the assets were known get their previews.
  function previewTiles() {
    for (const media of document.querySelectorAll('#tiles .tile[data-asset] .media.placeholder')) {
      const a = S.assets.get(media.parentElement.dataset.asset);
      if (a && previewURL(a.preview)) {
        media.classList.remove('placeholder');
        media.style.removeProperty('--hue');
        setMedia(media, null, a.preview, a.title);
      }
    }
  }

  function glyph(service) {
    return service
      .split(/[-_\s]+/)
      .filter(Boolean)
      .slice(0, 2)
      .map((w) => w[0].toUpperCase())
      .join('');
  }

  function ageOutTiles() {
    const age = tileAgeMinutes();
    if (age <= 0) return;
    const limit = Date.now() - age * 60000;
    for (const [offset, tile] of S.tiles) {
      if (Number(tile.dataset.time) < limit) {
        tile.remove();
        S.tiles.delete(offset);
      }
    }
    renderTilesNote();
  }

  function renderTilesNote() {
    const n = S.tiles.size;
    $('#tiles-empty').hidden = n > 0;
    setText($('#tiles-note'), n ? n + (n === 1 ? ' tile' : ' tiles') : '');
  }

  // ---- log ----

  let logQueue = [];
  let logTimer = 0;
  function addLog(line) {
    logQueue.push(line);
    if (!logTimer) logTimer = setTimeout(flushLog, 100);
  }
  function flushLog() {
    logTimer = 0;
    const box = $('#log');
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 24;
    const lines = logQueue.slice(-MAX_LOG);
    logQueue = [];
    const frag = document.createDocumentFragment();
    for (const l of lines) {
      const level = String(l.level || 'INFO').toUpperCase();
      frag.append(h('div', { class: 'line', dataset: { level } },
        h('time', { text: fmtTime(l.time_ms) }),
        h('span', { class: 'lvl', text: level }),
        h('span', { class: 'target', text: l.target }),
        h('span', { class: 'msg', text: l.text })));
    }
    box.append(frag);
    while (box.children.length > MAX_LOG) box.firstElementChild.remove();
    if (atEnd) box.scrollTop = box.scrollHeight;
  }
  function clearLog() {
    logQueue = [];
    $('#log').replaceChildren();
  }

  function toggleDebug(button) {
    const on = button.getAttribute('aria-checked') === 'true';
    act(button, async () => {
      const r = await api('PUT', '/log', { filter: on ? S.restoreFilter || 'info' : 'debug' });
      if (r && r.filter) {
        if (S.node) S.node.log_filter = r.filter;
        renderFilter(r.filter);
      }
    });
  }

  // ---- live events ----

  let source = null;
  let retry = 1000;
  function setStream(state) {
    document.body.dataset.stream = state;
    setPill($('#stream'), state === 'connecting' ? 'connecting' : state, {
      live: 'live', connecting: 'connecting', reconnecting: 'reconnecting',
    }[state]);
  }

  function connect() {
    if (source) source.close();
    setStream(S.node ? 'reconnecting' : 'connecting');
    const es = new EventSource(API + '/events');
    source = es;
    const on = (name, fn) => es.addEventListener(name, (e) => {
      eventsSeen[name] = (eventsSeen[name] || 0) + 1;
      let data;
      try {
        data = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      fn(data, e);
    });
    es.onopen = () => {
      retry = 1000;
      setStream('live');
    };
    es.onerror = () => {
      setStream('reconnecting');
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an error answer, such as an ended sign-in): ask the node
        // whether this browser may still read, and connect again if so, a little later
        // each time.
        setTimeout(() => {
          if (source !== es) return;
          source = null;
          checkSignIn().catch(() => {});
        }, retry);
        retry = Math.min(retry * 2, 15000);
      }
    };
    on('node', (node) => {
      setStream('live');
      // Each connection starts with the recent log lines again.
      clearLog();
      onNode(node);
      refreshAssets();
    });
    on('services', (list) => {
      S.services = list;
      renderServices();
    });
    on('links', (list) => {
      S.links = list;
      renderLinks();
    });
    on('mirror', (m) => {
      const was = S.mirror && S.mirror.state;
      S.mirror = m;
      renderMirror();
      if (m.state === 'done' && was !== 'done') refreshAssetsSoon();
    });
    on('demo-link', (d) => {
      S.demo = d;
      renderDemo();
    });
    on('bridge', (b) => {
      S.bridge = b;
      renderBridge();
    });
    on('tile', (t) => addTile(t));
    on('log', (l) => addLog(l));
  }

  // ---- start ----

  function renderAll() {
    renderServices();
    renderLinks();
    renderMirror();
    renderDemo();
    renderBridge();
    if (S.assetsLoaded) renderAssets();
  }

  function init() {
    const age = $('#tile-age');
    let saved = null;
    try {
      saved = localStorage.getItem(AGE_KEY);
    } catch (_) {
      saved = null;
    }
    age.value = saved != null && [...age.options].some((o) => o.value === saved) ? saved : '15';
    age.addEventListener('change', () => {
      try {
        localStorage.setItem(AGE_KEY, age.value);
      } catch (_) {
        // Private mode: remembered for this page only.
      }
      ageOutTiles();
    });
    $('#banner-close').addEventListener('click', hideError);
    $('#debug-logs').addEventListener('click', (e) => toggleDebug(e.currentTarget));
    $('#mirror-start').addEventListener('click', (e) => mirrorAction('start', e.currentTarget));
    $('#mirror-stop').addEventListener('click', (e) => mirrorAction('stop', e.currentTarget));
    $('#demo-profile').addEventListener('change', (e) => demoSet({ profile: e.currentTarget.value }, e.currentTarget));
    $('#demo-up').addEventListener('click', (e) => {
      const up = e.currentTarget.getAttribute('aria-checked') === 'true';
      demoSet({ up: !up }, e.currentTarget);
    });
    initFleet();
    initEnroll();
    $('#token-form').addEventListener('submit', signIn);
    $('#sign-out').addEventListener('click', signOut);
    checkSignIn().catch(() => {});
    setInterval(() => {
      ageOutTiles();
      // Relative times ("2 min ago") move on.
      renderServices();
      renderMirror();
    }, 1000);
    setInterval(refreshAssets, ASSET_POLL_MS);
  }

  // ---- ThumbHash ----
  // A ThumbHash (https://evanw.github.io/thumbhash/) decoded to a small RGBA picture: a
  // DC term and a few cosine terms per channel (L, P, Q in a YCoCg-like space, and alpha).

  function thumbHashToRGBA(hash) {
    const { PI, min, max, cos, round } = Math;
    const header24 = hash[0] | (hash[1] << 8) | (hash[2] << 16);
    const header16 = hash[3] | (hash[4] << 8);
    const lDc = (header24 & 63) / 63;
    const pDc = ((header24 >> 6) & 63) / 31.5 - 1;
    const qDc = ((header24 >> 12) & 63) / 31.5 - 1;
    const lScale = ((header24 >> 18) & 31) / 31;
    const hasAlpha = header24 >> 23;
    const pScale = ((header16 >> 3) & 63) / 63;
    const qScale = ((header16 >> 9) & 63) / 63;
    const isLandscape = header16 >> 15;
    const lx = max(3, isLandscape ? (hasAlpha ? 5 : 7) : header16 & 7);
    const ly = max(3, isLandscape ? header16 & 7 : hasAlpha ? 5 : 7);
    const aDc = hasAlpha ? (hash[5] & 15) / 15 : 1;
    const aScale = (hash[5] >> 4) / 15;
    const acStart = hasAlpha ? 6 : 5;
    let acIndex = 0;
    const decodeChannel = (nx, ny, scale) => {
      const ac = [];
      for (let cy = 0; cy < ny; cy++) {
        for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++) {
          const byte = hash[acStart + (acIndex >> 1)];
          ac.push((((byte >> ((acIndex & 1) << 2)) & 15) / 7.5 - 1) * scale);
          acIndex++;
        }
      }
      return ac;
    };
    const lAc = decodeChannel(lx, ly, lScale);
    const pAc = decodeChannel(3, 3, pScale * 1.25);
    const qAc = decodeChannel(3, 3, qScale * 1.25);
    const aAc = hasAlpha ? decodeChannel(5, 5, aScale) : null;
    const ratio = thumbHashAspectRatio(hash);
    const w = round(ratio > 1 ? 32 : 32 * ratio);
    const hgt = round(ratio > 1 ? 32 / ratio : 32);
    const rgba = new Uint8ClampedArray(w * hgt * 4);
    const fx = [];
    const fy = [];
    for (let y = 0, i = 0; y < hgt; y++) {
      for (let x = 0; x < w; x++, i += 4) {
        let l = lDc;
        let p = pDc;
        let q = qDc;
        let a = aDc;
        for (let cx = 0, n = max(lx, hasAlpha ? 5 : 3); cx < n; cx++) fx[cx] = cos((PI / w) * (x + 0.5) * cx);
        for (let cy = 0, n = max(ly, hasAlpha ? 5 : 3); cy < n; cy++) fy[cy] = cos((PI / hgt) * (y + 0.5) * cy);
        for (let cy = 0, j = 0; cy < ly; cy++) {
          const fy2 = fy[cy] * 2;
          for (let cx = cy ? 0 : 1; cx * ly < lx * (ly - cy); cx++, j++) l += lAc[j] * fx[cx] * fy2;
        }
        for (let cy = 0, j = 0; cy < 3; cy++) {
          const fy2 = fy[cy] * 2;
          for (let cx = cy ? 0 : 1; cx < 3 - cy; cx++, j++) {
            const f = fx[cx] * fy2;
            p += pAc[j] * f;
            q += qAc[j] * f;
          }
        }
        if (aAc) {
          for (let cy = 0, j = 0; cy < 5; cy++) {
            const fy2 = fy[cy] * 2;
            for (let cx = cy ? 0 : 1; cx < 5 - cy; cx++, j++) a += aAc[j] * fx[cx] * fy2;
          }
        }
        const b = l - (2 / 3) * p;
        const r = (3 * l - b + q) / 2;
        const g = r - q;
        rgba[i] = max(0, 255 * min(1, r));
        rgba[i + 1] = max(0, 255 * min(1, g));
        rgba[i + 2] = max(0, 255 * min(1, b));
        rgba[i + 3] = max(0, 255 * min(1, a));
      }
    }
    return { w, h: hgt, rgba };
  }

  function thumbHashAspectRatio(hash) {
    const header = hash[3];
    const hasAlpha = hash[2] & 0x80;
    const isLandscape = hash[4] & 0x80;
    const lx = isLandscape ? (hasAlpha ? 5 : 7) : header & 7;
    const ly = isLandscape ? header & 7 : hasAlpha ? 5 : 7;
    return lx / ly;
  }

  const previews = new Map();
  function previewURL(b64) {
    if (!b64) return null;
    if (previews.has(b64)) return previews.get(b64);
    let url = null;
    try {
      const bin = atob(b64);
      const hash = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) hash[i] = bin.charCodeAt(i);
      if (hash.length >= 5) {
        const { w, h: hgt, rgba } = thumbHashToRGBA(hash);
        const canvas = document.createElement('canvas');
        canvas.width = w;
        canvas.height = hgt;
        const ctx = canvas.getContext('2d');
        const data = ctx.createImageData(w, hgt);
        data.data.set(rgba);
        ctx.putImageData(data, 0, 0);
        url = canvas.toDataURL('image/png');
      }
    } catch (_) {
      url = null; // Not a ThumbHash: the placeholder shows.
    }
    if (previews.size > 1000) previews.clear();
    previews.set(b64, url);
    return url;
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
