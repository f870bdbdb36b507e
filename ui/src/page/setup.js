// An edge's first-run setup page (ui::setup): signs in if the node has a token, sends
// the operator's answers and code, shows HQ's answer, and once enrolled waits for the
// node itself to serve on this address, then loads its page.
(() => {
  'use strict';
  const API = '/api/v1';
  const $ = (css) => document.querySelector(css);

  function say(state, text) {
    document.body.dataset.state = state;
    const progress = $('#setup-progress');
    progress.textContent = text || '';
    progress.hidden = !text;
  }

  function fail(code, message) {
    const error = $('#setup-error');
    error.dataset.code = code;
    error.textContent = message;
    error.hidden = false;
  }

  // Calls the API; throws { code, message } on an error.
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET') headers['X-Requested-With'] = 'tether-page';
    let res;
    try {
      res = await fetch(API + path, {
        method,
        headers,
        cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw { code: 'unreachable', message: 'cannot reach this edge: ' + e.message, status: 0 };
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
      throw { code: err.code, message: err.message, status: res.status };
    }
    return data;
  }

  async function load() {
    $('#setup-error').hidden = true;
    const access = await api('GET', '/sign-in');
    if (access.token_required && access.access !== 'operate') {
      $('#sign-in-form').hidden = false;
      $('#setup-form').hidden = true;
      say('sign-in');
      return;
    }
    $('#sign-in-form').hidden = true;
    const offered = await api('GET', '/setup');
    $('#node-name').textContent = offered.name;
    $('#setup-name').value = offered.name;
    $('#setup-core').value = offered.core;
    $('#setup-core-name').value = offered.core_name;
    $('#setup-certs').textContent = offered.certs_dir;
    $('#setup-form').hidden = false;
    say('ready');
  }

  // Waits until the node itself answers on this address, then shows its page.
  async function waitForNode() {
    for (;;) {
      try {
        const res = await fetch('/readyz', { cache: 'no-store' });
        if (res.ok) {
          location.reload();
          return;
        }
      } catch (_) {
        // Between the setup and the node: try again.
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  $('#sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('#setup-error').hidden = true;
    try {
      await api('POST', '/sign-in', { token: $('#token').value });
      $('#token').value = '';
      await load();
    } catch (e) {
      fail(e.code, e.message);
    }
  });

  $('#setup-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('#setup-error').hidden = true;
    const button = $('#setup-enroll');
    button.disabled = true;
    const answers = {
      name: $('#setup-name').value.trim(),
      core: $('#setup-core').value.trim(),
      core_name: $('#setup-core-name').value.trim(),
      code: $('#setup-code').value.trim(),
    };
    say('enrolling', 'Enrolling with HQ at ' + answers.core + '…');
    try {
      const enrolled = await api('POST', '/setup', answers);
      const until = new Date(enrolled.not_after_ms).toISOString().slice(0, 10);
      $('#setup-form').hidden = true;
      say('enrolled', 'Enrolled as ' + enrolled.name + ' with HQ at ' + enrolled.core +
        ' (certificate ' + enrolled.serial + ', valid until ' + until + '). The edge is starting…');
      await waitForNode();
    } catch (e) {
      say('ready');
      fail(e.code, e.message);
      button.disabled = false;
    }
  });

  load().catch((e) => {
    say('error');
    fail(e.code, e.message);
  });
})();
