// camgate's dashboard: follows the gateway's event stream to show every camera's state and rates, starts and
// stops cameras through the REST API, and plays the selected camera's built-in preview (/live/<id>.flv) with
// mpegts.js. Plain script, no build step; every value from the API reaches the page as text, never as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'camgate.token';
  const $ = (id) => document.getElementById(id);

  // Cameras by id: the gateway's latest status for each, plus what this page knows that the API does not say.
  // `status` is null once the gateway has forgotten the camera (stopped); the row stays so it can be started
  // again. `restart` is the body to PUT for that, kept in memory only: it may hold a camera password, which
  // the API never answers with and which must not be written to storage.
  const cameras = new Map();
  let selected = null;
  let player = null;
  let playerRetry = null;
  let events = null; // AbortController of the running event stream

  // --- token -------------------------------------------------------------------------------------------

  const token = () => localStorage.getItem(TOKEN_KEY) || '';

  function authHeaders(extra = {}) {
    const t = token();
    return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
  }

  function askForToken(reason) {
    $('token-reason').textContent = reason;
    $('token-form').hidden = false;
    $('token').focus();
  }

  $('token-toggle').addEventListener('click', () => {
    const form = $('token-form');
    form.hidden = !form.hidden;
    if (!form.hidden) $('token-reason').textContent = 'API token for this gateway (empty if it has none).';
  });

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('token').value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    $('token-form').hidden = true;
    loadGateway();
    restartEvents();
    if (selected) play(selected);
  });

  $('token-forget').addEventListener('click', () => {
    localStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    restartEvents();
  });

  // --- API calls ---------------------------------------------------------------------------------------

  /** Calls the API; answers the parsed JSON, or throws an Error carrying the gateway's own message. */
  async function api(method, path, body) {
    const headers = authHeaders(body ? { 'Content-Type': 'application/json' } : {});
    const response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    const answer = await response.json().catch(() => null);
    if (response.status === 401) askForToken('The gateway refused the token: enter a valid one.');
    if (!response.ok) throw new Error((answer && answer.error) || `${method} ${path}: HTTP ${response.status}`);
    return answer;
  }

  function say(text, isError = false) {
    const message = $('message');
    message.textContent = text;
    message.classList.toggle('error', isError);
  }

  async function stopCamera(id) {
    try {
      await api('DELETE', `/api/v1/cameras/${encodeURIComponent(id)}`);
      say(`Stopped ${id}.`);
    } catch (error) {
      say(`Cannot stop ${id}: ${error.message}`, true);
    }
  }

  async function startCamera(id, body) {
    try {
      const status = await api('PUT', `/api/v1/cameras/${encodeURIComponent(id)}`, body);
      remember(id, { restart: body });
      update(status);
      say(`Started ${id}.`);
      return true;
    } catch (error) {
      say(`Cannot start ${id}: ${error.message}`, true);
      return false;
    }
  }

  // Which submission of the add form is the latest: a start can take a while (the camera's address is
  // checked), and the next camera may be typed and submitted meanwhile.
  let lastAdd = 0;

  $('add-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const form = e.target;
    const add = ++lastAdd;
    const fields = ['id', 'input', 'output'];
    const sent = fields.map((name) => form.elements[name].value);
    const id = form.elements.id.value.trim();
    const body = { input: form.elements.input.value.trim(), preview: form.elements.preview.checked };
    const output = form.elements.output.value.trim();
    if (output) body.output = output;
    if (await startCamera(id, body)) {
      // Cleared only if it still shows this camera: what was typed since is the next one.
      if (fields.every((name, i) => form.elements[name].value === sent[i])) form.reset();
      // The player follows the camera added last, whichever start was answered last.
      if (add === lastAdd) select(id);
    }
  });

  // --- the event stream --------------------------------------------------------------------------------
  //
  // EventSource cannot send an Authorization header, and a token in the URL would end up in access logs, so
  // the stream is read with fetch and parsed here (text/event-stream: blocks separated by a blank line, each
  // with `event:` and `data:` lines; lines starting with `:` are keep-alives).

  function restartEvents() {
    if (events) events.abort();
    followEvents();
  }

  async function followEvents() {
    const controller = new AbortController();
    events = controller;
    let delay = 500;
    while (!controller.signal.aborted) {
      try {
        const response = await fetch('/api/v1/events', {
          headers: authHeaders({ Accept: 'text/event-stream' }),
          cache: 'no-store',
          signal: controller.signal,
        });
        if (response.status === 401) {
          connection('locked', 'token needed');
          askForToken(token() ? 'The gateway refused the token: enter a valid one.' : 'This gateway needs an API token.');
          return; // the token form restarts the stream
        }
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        connection('live', 'live');
        delay = 500;
        await readEvents(response.body, controller.signal);
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      connection('reconnecting', 'reconnecting…');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  async function readEvents(body, signal) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') name = text;
          else if (field === 'data') data.push(text);
        }
        if (data.length) onEvent(name, data.join('\n'));
      }
    }
  }

  function onEvent(name, data) {
    if (name === 'snapshot') {
      const live = new Set();
      for (const status of JSON.parse(data)) {
        live.add(status.id);
        update(status);
      }
      for (const [id, camera] of cameras) if (!live.has(id) && camera.status) forget(id);
    } else if (name === 'status') {
      update(JSON.parse(data));
    } else if (name === 'removed') {
      forget(JSON.parse(data).id);
    } else if (name === 'lagged') {
      // Missed events (a removal among them, maybe): read the whole list once to catch up.
      api('GET', '/api/v1/cameras').then((list) => onEvent('snapshot', JSON.stringify(list)), () => {});
    }
  }

  function connection(state, text) {
    const badge = $('connection');
    badge.dataset.state = state;
    badge.textContent = text;
  }

  // --- the camera table --------------------------------------------------------------------------------

  function remember(id, facts) {
    const camera = cameras.get(id) || { status: null, restart: null, row: null };
    Object.assign(camera, facts);
    cameras.set(id, camera);
    return camera;
  }

  /** A body that starts the camera again as it was, if the status shows all of it (nothing redacted). */
  function restartBody(status) {
    const hidden = (url) => url.includes('***');
    if (hidden(status.input)) return null;
    if (status.output && (hidden(status.output) || !/^rtmps?:\/\//.test(status.output))) return null;
    return { input: status.input, output: status.output || 'none', preview: status.preview_path !== null };
  }

  function update(status) {
    const camera = remember(status.id, { status });
    if (!camera.restart) camera.restart = restartBody(status);
    render(status.id);
    if (status.id === selected && !player && status.preview_path && status.state === 'running') play(selected);
    if (!selected && status.preview_path) select(status.id);
  }

  function forget(id) {
    const camera = cameras.get(id);
    if (!camera) return;
    camera.status = null;
    render(id);
    if (id === selected) stopPlayer('Camera stopped.');
  }

  function cell(row, index) {
    while (row.cells.length <= index) row.insertCell();
    return row.cells[index];
  }

  function button(text, action, className = 'secondary') {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    b.dataset.action = action;
    b.className = className;
    return b;
  }

  /** Creates or updates the camera's row in place, so buttons are not replaced under the pointer. */
  function render(id) {
    const camera = cameras.get(id);
    if (!camera.row) {
      camera.row = $('cameras').tBodies[0].insertRow();
      camera.row.dataset.id = id;
      const actions = cell(camera.row, 6);
      actions.className = 'actions';
      actions.append(button('Watch', 'watch'), button('Stop', 'stop', 'danger'), button('Start', 'start'),
        button('Forget', 'forget'));
      const rows = [...$('cameras').tBodies[0].rows].sort((a, b) => a.dataset.id.localeCompare(b.dataset.id));
      $('cameras').tBodies[0].append(...rows);
    }
    const { row, status } = camera;
    const state = status ? status.state : 'stopped';
    const rates = status ? status.rates : null;
    cell(row, 0).textContent = id;
    const badge = cell(row, 1);
    badge.textContent = state;
    badge.className = `state ${state}`;
    badge.title = (status && (status.last_error || status.warnings.join('; '))) || '';
    cell(row, 2).textContent = rates ? rates.fps_out.toFixed(1) : '';
    cell(row, 3).textContent = rates ? Math.round(rates.bitrate_kbps).toString() : '';
    cell(row, 4).textContent = status ? String(status.preview_viewers) : '';
    const input = cell(row, 5);
    input.textContent = status ? status.input : '';
    input.className = 'url';
    for (const n of [2, 3, 4]) cell(row, n).className = 'num';
    row.classList.toggle('selected', id === selected);
    const live = status && !['stopped', 'failed'].includes(state);
    const show = (action, visible) => { row.querySelector(`[data-action="${action}"]`).hidden = !visible; };
    show('watch', Boolean(status && status.preview_path));
    show('stop', Boolean(live));
    show('start', !live && Boolean(camera.restart));
    show('forget', !status);
    $('no-cameras').hidden = cameras.size > 0;
  }

  $('cameras').addEventListener('click', (e) => {
    const action = e.target.closest('button') && e.target.closest('button').dataset.action;
    const row = e.target.closest('tr');
    if (!action || !row) return;
    const id = row.dataset.id;
    if (action === 'watch') select(id);
    else if (action === 'stop') stopCamera(id);
    else if (action === 'start') startCamera(id, cameras.get(id).restart);
    else if (action === 'forget') {
      row.remove();
      cameras.delete(id);
      if (id === selected) { selected = null; stopPlayer('Choose a camera to watch.'); }
      $('no-cameras').hidden = cameras.size > 0;
    }
  });

  // --- the player --------------------------------------------------------------------------------------

  function select(id) {
    const previous = selected;
    selected = id;
    for (const other of [previous, id]) if (other && cameras.has(other)) render(other);
    $('player-title').textContent = `Preview: ${id}`;
    play(id);
  }

  function stopPlayer(text) {
    clearTimeout(playerRetry);
    if (player) {
      player.destroy();
      player = null;
    }
    $('player-status').textContent = text;
  }

  async function play(id) {
    stopPlayer(`Connecting to ${id}…`);
    const camera = cameras.get(id);
    if (!camera || !camera.status) return stopPlayer(`${id} is not running.`);
    if (!camera.status.preview_path) return stopPlayer(`${id} has no preview (started with preview off).`);
    if (!window.mpegts || !mpegts.getFeatureList().mseLivePlayback) {
      return stopPlayer('This browser cannot play HTTP-FLV (no Media Source Extensions).');
    }
    const url = new URL(camera.status.preview_path, location.href);
    if (gateway.signed_viewer_urls) {
      // The gateway signs viewer URLs: ask for one that expires, as a viewer would be handed.
      try {
        const urls = await api('GET', `/api/v1/cameras/${encodeURIComponent(id)}/viewer_url`);
        url.search = new URL(urls.preview_url || urls.url).search;
      } catch (e) {
        return stopPlayer(`No viewer URL for ${id}: ${e.message}`);
      }
      if (selected !== id) return undefined;
    }
    player = mpegts.createPlayer(
      { type: 'flv', isLive: true, url: url.href },
      {
        enableStashBuffer: false, // show frames as they come: this is a live view, not a recording
        liveBufferLatencyChasing: true,
        autoCleanupSourceBuffer: true,
        headers: authHeaders(),
      },
    );
    player.on(mpegts.Events.ERROR, (type, detail) => retry(id, `${type}: ${detail}`));
    player.on(mpegts.Events.LOADING_COMPLETE, () => retry(id, 'the stream ended'));
    player.attachMediaElement($('video'));
    player.load();
    const started = player.play();
    if (started && started.catch) started.catch(() => {});
    $('player-status').textContent = `Playing ${camera.status.preview_path}`;
  }

  /** The stream broke (camera restarting, gateway dropped a slow viewer): try again while it is selected. */
  function retry(id, why) {
    stopPlayer(`${id}: ${why}; retrying…`);
    playerRetry = setTimeout(() => {
      const camera = cameras.get(id);
      if (selected === id && camera && camera.status) play(id);
      else stopPlayer(`${id} is not running.`);
    }, 2000);
  }

  // --- the gateway's own warnings ------------------------------------------------------------------------

  let gateway = { signed_viewer_urls: false, warnings: [] };

  /** Shows what the gateway says is unsafe about its configuration (an open API, unsigned viewer URLs). */
  async function loadGateway() {
    try {
      gateway = await api('GET', '/api/v1/gateway');
    } catch (e) {
      return;
    }
    const list = $('warning-list');
    list.replaceChildren(...gateway.warnings.map((text) => {
      const item = document.createElement('li');
      item.textContent = text;
      return item;
    }));
    $('warnings').hidden = gateway.warnings.length === 0;
  }

  loadGateway();
  followEvents();
})();
