// The Sluice console: one script for every page (docs/adr/0013-console.md). It uses the same
// JSON API as any other client, signed in by the session cookie; every change repeats the
// session's CSRF token. Data from the server only ever enters the page as text nodes (never
// as HTML), and links are built from numeric ids only.

const main = document.getElementById('main');
const STATES = ['queued', 'running', 'succeeded', 'partial', 'failed', 'cancelled'];
const OPEN = new Set(['queued', 'running']);
let session = null;

/** An element with attributes (`on…` are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value' || k === 'checked' || k === 'disabled') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** One API call; a problem answer throws an ApiError, a 401 sends the browser to sign in. */
async function api(method, path, body, extra = {}) {
  const headers = { ...extra };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session) headers['X-CSRF-Token'] = session.csrf;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  const type = res.headers.get('content-type') || '';
  const data = res.status === 204 ? null : type.includes('json') ? await res.json() : await res.text();
  if (res.status === 401 && location.pathname !== '/signin') {
    location.assign('/signin');
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data && typeof data === 'object' ? data : { detail: String(data) });
    err.retryAfter = res.headers.get('retry-after');
    throw err;
  }
  return { data, headers: res.headers };
}

const when = (t) => (t ? new Date(t).toLocaleString() : '—');
function dur(s) {
  if (s === null || s === undefined) return '—';
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
const badge = (state) => h('span', { class: `state ${state}`, 'data-state': state }, state);
const ended = (j) => j.lakes.done + j.lakes.failed + j.lakes.cancelled;
const table = (id, heads, body) =>
  h('table', { id }, h('thead', {}, h('tr', {}, heads.map((t) => h('th', {}, t)))), body);
const failure = (e) => h('p', { class: 'error', role: 'alert' }, e.message);

/** Calls `load` now and then every `ms` after the last call ended, while the tab is visible. */
async function every(ms, load) {
  await load();
  const next = () => setTimeout(async () => {
    if (!document.hidden) await load();
    next();
  }, ms);
  next();
}

/** Asks before a change; resolves to `{reason}` when confirmed, `null` when not. */
function confirmAction(text, withReason = false) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-reason-label').hidden = !withReason;
  const reason = document.getElementById('confirm-reason');
  reason.value = '';
  // Enter in the reason confirms (the form's first button would go back).
  reason.onkeydown = (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      dlg.close('ok');
    }
  };
  return new Promise((resolve) => {
    dlg.addEventListener(
      'close',
      () => resolve(dlg.returnValue === 'ok' ? { reason: reason.value.trim() } : null),
      { once: true },
    );
    dlg.returnValue = '';
    dlg.showModal();
  });
}

function nav() {
  const links = [['/', 'Jobs', 'nav-jobs'], ['/hunt', 'New hunt', 'nav-hunt']];
  if (session.role !== 'researcher') links.push(['/ops', 'Operations', 'nav-ops']);
  document.getElementById('nav').replaceChildren(
    ...links.map(([href, text, id]) =>
      h('a', { href, id, class: location.pathname === href ? 'here' : undefined }, text)),
  );
  document.getElementById('who').replaceChildren(
    h('span', { id: 'whoami' }, `${session.owner} (${session.role})`),
    h('button', { id: 'signout', onclick: signOut }, 'Sign out'),
  );
}

async function signOut() {
  try {
    await api('DELETE', '/ui/session');
  } finally {
    location.assign('/signin');
  }
}

function signinPage() {
  // No `name` on the input: were this script not running, a plain form submission could not
  // put the token in a URL.
  // Text masked by CSS, not a password field: browsers offer to keep passwords.
  const token = h('input', { id: 'token', type: 'text', class: 'secret', autocomplete: 'off', spellcheck: 'false', placeholder: 'slc_…' });
  const err = h('p', { id: 'signin-error', class: 'error', role: 'alert' });
  const form = h('form', {
    class: 'card signin',
    onsubmit: async (ev) => {
      ev.preventDefault();
      err.textContent = '';
      try {
        await api('POST', '/ui/session', { token: token.value });
        token.value = '';
        location.assign('/');
      } catch (e) {
        err.textContent = e.message;
      }
    },
  },
  h('h1', {}, 'Sign in to Sluice'),
  h('label', { for: 'token' }, 'API token'),
  token,
  h('button', { class: 'primary', id: 'signin' }, 'Sign in'),
  err,
  h('p', { class: 'muted' },
    'A token from `sluice tokens create`. It opens a session and is not kept in this browser.'));
  main.replaceChildren(form);
  token.focus();
}

async function jobsPage() {
  const everyone = session.role !== 'researcher';
  const filter = h('select', { id: 'state-filter', onchange: () => { extended = false; load(); } },
    h('option', { value: '' }, 'any state'), STATES.map((s) => h('option', { value: s }, s)));
  const body = h('tbody');
  const status = h('div', { class: 'row' });
  const schedules = h('tbody');
  const scheduleNote = h('div', { id: 'schedules-note' });
  main.replaceChildren(
    h('h1', {}, everyone ? 'Every job' : 'Your jobs'),
    h('div', { class: 'row' }, h('label', {}, 'State ', filter), h('a', { href: '/hunt' }, 'New hunt')),
    h('section', {}, table('jobs', ['Job', 'Owner', 'State', 'Lakes', 'Rows', 'Submitted', 'Why it waits'], body)),
    status,
    h('h2', {}, everyone ? 'Recurring hunts' : 'Your recurring hunts'),
    h('section', {}, table('schedules', ['Name', 'Owner', 'Runs', 'Next run', 'Last job', 'Last tick', ''], schedules), scheduleNote,
      h('p', { class: 'muted' }, 'Made with `sluice schedules create` or POST /v1/schedules.')),
  );
  async function loadSchedules() {
    try {
      const { data } = await api('GET', '/v1/schedules');
      schedules.replaceChildren(...data.map((sc) => h('tr', { 'data-schedule': sc.id },
        h('td', {}, sc.name),
        h('td', {}, sc.owner),
        h('td', { class: 'num' }, sc.runs),
        h('td', {}, sc.paused ? `paused by ${sc.paused_by}` : when(sc.next_at),
          ' ', h('span', { class: 'muted' }, sc.cron ? `(cron ${sc.cron})` : `(every ${dur(sc.every_secs)})`)),
        h('td', {}, sc.last_job ? h('a', { href: `/jobs/${Number(sc.last_job)}` }, `#${sc.last_job}`) : '—'),
        h('td', {}, sc.last_error ? h('span', { class: 'error' }, `made no job: ${sc.last_error}`) : ''),
        h('td', {}, h('button', {
          'data-hold': sc.id,
          onclick: async () => {
            const verb = sc.paused ? 'resume' : 'pause';
            const asked = await confirmAction(sc.paused
              ? `Resume ${sc.name}? It runs again from its next tick.`
              : `Pause ${sc.name}? No tick runs until it is resumed.`);
            if (!asked) return;
            try {
              await api('POST', `/v1/schedules/${Number(sc.id)}/${verb}`);
              scheduleNote.replaceChildren();
            } catch (e) {
              scheduleNote.replaceChildren(failure(e));
            }
            loadSchedules();
          },
        }, sc.paused ? 'Resume' : 'Pause')))));
      if (!data.length) schedules.replaceChildren(h('tr', {}, h('td', { colspan: '7', class: 'muted' }, 'No recurring hunts.')));
    } catch (e) {
      scheduleNote.replaceChildren(failure(e));
    }
  }
  let cursor = null;
  let extended = false;
  async function load(more = false) {
    extended = extended || more;
    const q = new URLSearchParams({ limit: '50' });
    if (filter.value) q.set('state', filter.value);
    if (more && cursor) q.set('cursor', cursor);
    try {
      const { data } = await api('GET', `/v1/jobs?${q}`);
      const rows = data.jobs.map((j) => h('tr', { 'data-job': j.id },
        h('td', {}, h('a', { href: `/jobs/${Number(j.id)}` }, `#${j.id}`)),
        h('td', {}, j.owner),
        h('td', {}, badge(j.state)),
        h('td', { class: 'num' }, `${ended(j)} / ${j.lakes.total}`, j.lakes.failed ? ` (${j.lakes.failed} failed)` : ''),
        h('td', { class: 'num' }, j.rows_found),
        h('td', {}, when(j.created_at)),
        h('td', {}, j.waiting.join('; '))));
      if (more) body.append(...rows);
      else body.replaceChildren(...rows);
      cursor = data.next_cursor;
      status.replaceChildren(
        data.jobs.length || more ? '' : h('p', { class: 'muted' }, 'No jobs yet.'),
        cursor ? h('button', { id: 'more-jobs', onclick: () => load(true) }, 'More') : '',
      );
    } catch (e) {
      status.replaceChildren(failure(e));
    }
  }
  // Fresh every few seconds, unless the reader has paged on.
  await every(5000, async () => {
    if (!extended) await load();
    await loadSchedules();
  });
}

async function huntPage() {
  let kind = 'sql';
  let key = crypto.randomUUID();
  const sql = h('textarea', { id: 'sql', class: 'code', spellcheck: 'false', placeholder: 'SELECT … FROM events WHERE …' });
  const list = (id, ph) => h('textarea', { id, rows: 4, placeholder: ph, spellcheck: 'false' });
  const ips = list('ips', 'IPs, one per line');
  const hashes = list('hashes', 'SHA-256 hashes, one per line');
  const domains = list('domains', 'domains, one per line');
  const since = h('input', { id: 'since', type: 'datetime-local' });
  const until = h('input', { id: 'until', type: 'datetime-local' });
  const priority = h('input', { id: 'priority', type: 'number', value: '0', min: '-100', max: '100' });
  const webhook = h('input', { id: 'webhook', type: 'url', size: 40, placeholder: 'https://… (optional)' });
  const marks = h('ul', { id: 'marks', class: 'marks' });
  const plan = h('div', { id: 'plan' });
  const lakeBox = h('div', { id: 'lakes', class: 'lakes' }, 'Loading lakes…');
  const tagFilter = h('select', { id: 'tag-filter' }, h('option', { value: '' }, 'any tags'));
  const submit = h('button', { id: 'submit', class: 'primary', disabled: true }, 'Submit hunt');
  const sqlPane = h('div', { id: 'sql-pane' }, h('label', { for: 'sql' }, 'SQL over the table ', h('code', {}, 'events')), sql);
  const iocPane = h('div', { id: 'ioc-pane', hidden: true },
    h('div', { class: 'row' }, ips, hashes, domains),
    h('div', { class: 'row' }, h('label', {}, 'Since ', since), h('label', {}, 'Until ', until)));
  const tab = (k, text) => h('button', { id: `tab-${k}`, class: k === kind ? 'here' : undefined, onclick: () => {
    kind = k;
    sqlPane.hidden = k !== 'sql';
    iocPane.hidden = k !== 'ioc';
    for (const b of document.querySelectorAll('.tabs button')) b.classList.toggle('here', b.id === `tab-${k}`);
    changed();
  } }, text);
  main.replaceChildren(
    h('h1', {}, 'New hunt'),
    h('section', {},
      h('div', { class: 'row tabs' }, tab('sql', 'SQL'), tab('ioc', 'Indicators')),
      sqlPane, iocPane, marks, plan),
    h('section', {}, h('div', { class: 'row' }, h('strong', {}, 'Lakes'), tagFilter,
      h('span', { class: 'muted' }, 'none ticked: every lake open to you')), lakeBox),
    h('section', {}, h('div', { class: 'row' },
      h('label', {}, 'Priority ', priority), h('label', {}, 'Webhook ', webhook), submit)),
  );

  function selector() {
    const names = [...lakeBox.querySelectorAll('input:checked')].map((c) => c.value);
    const out = { names };
    if (tagFilter.value) {
      const [k, ...v] = tagFilter.value.split('=');
      out.tags = { [k]: v.join('=') };
    }
    return out;
  }
  function hunt() {
    if (kind === 'sql') return { kind: 'sql', sql: sql.value, lakes: selector() };
    const items = (t) => t.value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
    const out = { kind: 'ioc', ips: items(ips), hashes: items(hashes), domains: items(domains), lakes: selector() };
    if (since.value) out.since = new Date(since.value).toISOString();
    if (until.value) out.until = new Date(until.value).toISOString();
    return out;
  }
  function request() {
    const r = { hunt: hunt(), priority: Number(priority.value) || 0 };
    if (webhook.value.trim()) r.webhook = webhook.value.trim();
    return r;
  }

  let seq = 0;
  let timer = null;
  function changed() {
    submit.disabled = true;
    key = crypto.randomUUID();
    clearTimeout(timer);
    timer = setTimeout(validate, 300);
  }
  async function validate() {
    const mine = ++seq;
    plan.replaceChildren(h('p', { class: 'muted' }, 'Checking…'));
    try {
      const { data } = await api('POST', '/v1/validate', request());
      if (mine !== seq) return;
      showPlan(data);
      submit.disabled = false;
    } catch (e) {
      if (mine === seq) showMarks(e);
    }
  }
  function showPlan(v) {
    marks.replaceChildren();
    sql.removeAttribute('aria-invalid');
    const names = v.lakes.slice(0, 12).join(', ') + (v.lakes.length > 12 ? ` and ${v.lakes.length - 12} more` : '');
    plan.replaceChildren(h('div', { class: 'plan', id: 'plan-ok' },
      h('strong', {}, 'Valid. '),
      `${v.tasks} lake${v.tasks === 1 ? '' : 's'}: ${names}. About ${v.est_provider_calls} provider calls. `,
      `ETA ${dur(v.eta_alone_secs)} alone, ${dur(v.eta_with_backlog_secs)} behind the current backlog.`,
      v.intake_open ? '' : h('div', { class: 'error' }, 'Intake is closed (drain): a submission now is refused.')));
  }
  function showMarks(e) {
    plan.replaceChildren();
    const found = e.problem && Array.isArray(e.problem.errors) && e.problem.errors.length
      ? e.problem.errors : [{ line: 0, column: 0, message: e.message }];
    const lines = sql.value.split('\n');
    sql.setAttribute('aria-invalid', String(kind === 'sql' && found.some((m) => m.line > 0)));
    marks.replaceChildren(...found.map((m) => {
      const at = kind === 'sql' && m.line >= 1 && m.line <= lines.length;
      const line = at ? lines[m.line - 1] : '';
      // Keep tabs under the caret so it lines up with the text above it.
      const pad = line.slice(0, Math.max(0, m.column - 1)).replace(/[^\t]/g, ' ');
      return h('li', { class: 'mark', 'data-line': m.line, 'data-column': m.column, onclick: () => at && jump(m.line, m.column) },
        m.line ? h('strong', { class: 'where' }, `Line ${m.line}, column ${m.column}: `) : '',
        h('span', { class: 'message' }, m.message),
        m.hint ? h('div', { class: 'hint' }, 'Hint: ', m.hint) : '',
        at ? h('pre', {}, `${line}\n`, h('span', { class: 'caret' }, `${pad}^`)) : '');
    }));
  }
  function jump(line, column) {
    const lines = sql.value.split('\n');
    let at = 0;
    for (let i = 0; i < line - 1; i += 1) at += lines[i].length + 1;
    at += Math.max(0, column - 1);
    sql.focus();
    sql.setSelectionRange(at, Math.min(sql.value.length, at + 1));
  }
  submit.addEventListener('click', async () => {
    submit.disabled = true;
    try {
      const { data } = await api('POST', '/v1/jobs', request(), { 'Idempotency-Key': key });
      location.assign(`/jobs/${Number(data.job)}`);
    } catch (e) {
      showMarks(e);
    }
  });
  for (const el of [sql, ips, hashes, domains, since, until, priority, webhook, tagFilter]) {
    el.addEventListener('input', changed);
  }
  lakeBox.addEventListener('change', changed);

  try {
    const { data } = await api('GET', '/v1/lakes');
    const tags = new Set();
    lakeBox.replaceChildren(...data.map((l) => {
      Object.entries(l.tags).forEach(([k, v]) => tags.add(`${k}=${v}`));
      return h('label', { 'data-lake': l.name }, h('input', { type: 'checkbox', value: l.name }), ' ', l.name,
        h('span', { class: 'tag' }, l.scope), Object.entries(l.tags).map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`)));
    }));
    if (!data.length) lakeBox.replaceChildren(h('p', { class: 'muted' }, 'No lake is open to you.'));
    tagFilter.append(...[...tags].sort().map((t) => h('option', { value: t }, t)));
  } catch (e) {
    lakeBox.replaceChildren(failure(e));
  }
  sql.focus();
}

async function jobPage(id) {
  const head = h('h1', { id: 'job-title' }, `Job #${id}`);
  const facts = h('dl', { class: 'facts', id: 'facts' });
  const waits = h('ul', { class: 'waits', id: 'waits' });
  const actions = h('div', { class: 'row', id: 'actions' });
  const note = h('div', { id: 'note' });
  const results = h('section', { id: 'results' });
  const timeline = h('tbody');
  const moreEvents = h('div', { class: 'row' });
  main.replaceChildren(head, h('section', {}, facts, waits, actions, note),
    h('h2', {}, 'Results'), results,
    h('h2', {}, 'Timeline'), h('section', {}, table('timeline', ['At', 'Event', 'Task', 'Scope', 'Detail'], timeline), moreEvents));

  let job = null;
  let shownRows = -1;
  let offset = 0;

  /** The job now (`wait`: a long poll); `null` once it is gone or not ours to see. */
  async function fetchJob(wait) {
    for (;;) {
      try {
        return (await api('GET', `/v1/jobs/${id}${wait ? '?wait=25s' : ''}`)).data;
      } catch (e) {
        if (e.status === 404 || e.status === 401) {
          if (e.status === 404) main.replaceChildren(head, h('p', { class: 'error', id: 'not-found' }, e.message));
          return null;
        }
        note.replaceChildren(failure(e));
        // Try again later (as the server asks, when it says), not at once.
        const after = Number(e.retryAfter) || 5;
        await new Promise((r) => setTimeout(r, Math.min(60, after) * 1000));
      }
    }
  }
  function render() {
    head.replaceChildren(`Job #${job.id} `, badge(job.state));
    const fact = (k, ...v) => [h('dt', {}, k), h('dd', {}, ...v)];
    const done = ended(job);
    facts.replaceChildren(
      ...fact('Owner', job.owner),
      ...fact('Lakes', h('progress', { id: 'progress', max: String(job.lakes.total || 1), value: String(done) }), ' ',
        h('span', { id: 'progress-text' }, `${done} of ${job.lakes.total} done`,
          job.lakes.failed ? `, ${job.lakes.failed} failed` : '', job.lakes.cancelled ? `, ${job.lakes.cancelled} cancelled` : '')),
      ...fact('Rows found', h('span', { id: 'rows-found' }, job.rows_found)),
      ...fact('ETA', OPEN.has(job.state) ? dur(job.eta_secs) : '—'),
      ...fact('Priority', job.priority),
      ...fact('Submitted', when(job.created_at)),
      ...fact('Started', when(job.started_at)),
      ...fact('Finished', when(job.finished_at)),
      ...(job.error ? fact('Error', h('span', { id: 'job-error', class: 'error' }, job.error)) : []),
      ...(job.webhook_host ? fact('Webhook', job.webhook_host) : []),
    );
    waits.replaceChildren(...(job.waiting || []).map((w) => h('li', {}, 'Waiting: ', w)));
    // The buttons are replaced only when they change, so a click never lands on one that a
    // refresh has just taken away.
    const offer = OPEN.has(job.state) ? 'cancel' : job.lakes.failed || job.lakes.cancelled ? 'rerun' : '';
    if (actions.dataset.offer !== offer) {
      actions.dataset.offer = offer;
      actions.replaceChildren(
        offer === 'cancel' ? h('button', { id: 'cancel', class: 'danger', onclick: () => act('cancel') }, 'Cancel job') : '',
        offer === 'rerun' ? h('button', { id: 'rerun', onclick: () => act('retry') }, 'Rerun failed and cancelled lakes') : '');
    }
  }
  async function act(what) {
    const asked = what === 'cancel'
      ? await confirmAction(`Cancel job #${job.id}? Its unfinished lakes stop; results so far stay.`, true)
      : await confirmAction(`Run the failed and cancelled lakes of job #${job.id} again?`);
    if (!asked) return;
    try {
      const body = what === 'cancel' && asked.reason ? { reason: asked.reason } : undefined;
      job = (await api('POST', `/v1/jobs/${job.id}/${what}`, body)).data;
      note.replaceChildren();
      render();
      follow();
    } catch (e) {
      note.replaceChildren(failure(e));
    }
  }
  async function loadResults() {
    const q = new URLSearchParams({ format: 'json', limit: '50' });
    if (offset) q.set('cursor', String(offset));
    try {
      const res = await api('GET', `/v1/jobs/${id}/results?${q}`);
      const rows = res.data;
      const next = res.headers.get('x-next-cursor');
      const cols = [];
      for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
      const cell = (v) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
      const base = `/v1/jobs/${Number(id)}/results`;
      results.replaceChildren(
        h('div', { class: 'row' },
          h('span', { id: 'results-range' }, rows.length ? `Rows ${offset + 1}–${offset + rows.length}` : 'No rows yet'),
          offset ? h('button', { id: 'results-prev', onclick: () => { offset = Math.max(0, offset - 50); loadResults(); } }, 'Previous') : '',
          next ? h('button', { id: 'results-next', onclick: () => { offset = Number(next); loadResults(); } }, 'Next') : '',
          h('a', { id: 'download-csv', href: `${base}?format=csv&limit=100000`, download: `job-${Number(id)}.csv` }, 'Download CSV'),
          h('a', { id: 'download-parquet', href: `${base}?format=parquet&limit=100000`, download: `job-${Number(id)}.parquet` }, 'Download Parquet'),
          h('span', { class: 'muted' }, 'downloads hold the first 100,000 rows; `sluice results` reads every row')),
        rows.length ? table('result-rows', cols, h('tbody', {}, rows.map((r) => h('tr', {}, cols.map((c) => h('td', {}, cell(r[c]))))))) : '');
    } catch (e) {
      results.replaceChildren(failure(e));
    }
  }
  let eventCursor = null;
  async function loadEvents(more = false) {
    const q = new URLSearchParams({ limit: '200' });
    if (more && eventCursor) q.set('cursor', eventCursor);
    try {
      const { data } = await api('GET', `/v1/jobs/${id}/events?${q}`);
      const rows = data.events.map((e) => h('tr', { 'data-kind': e.kind },
        h('td', {}, when(e.at)), h('td', {}, e.kind), h('td', {}, e.task ?? ''), h('td', {}, e.scope ?? ''),
        h('td', { class: 'detail' }, e.detail ? JSON.stringify(e.detail) : '')));
      if (more) timeline.append(...rows);
      else timeline.replaceChildren(...rows);
      eventCursor = data.next_cursor;
      moreEvents.replaceChildren(eventCursor ? h('button', { id: 'more-events', onclick: () => loadEvents(true) }, 'More') : '');
    } catch (e) {
      moreEvents.replaceChildren(failure(e));
    }
  }
  async function refreshParts() {
    if (job.rows_found !== shownRows) {
      shownRows = job.rows_found;
      await loadResults();
    }
    if (!eventCursor) await loadEvents();
  }
  // One follower at a time: a newer one (after a cancel or rerun) retires the older, whose
  // answer may be older than the page's.
  let generation = 0;
  async function follow() {
    const mine = ++generation;
    let pause = 0;
    while (mine === generation && OPEN.has(job.state)) {
      const asked = Date.now();
      const fresh = await fetchJob(true);
      if (mine !== generation || !fresh) return;
      // A poll the server answered at once with nothing new (it holds only so many): back
      // off, 2 s doubling to 30 s, rather than ask again and again.
      const same = JSON.stringify(fresh) === JSON.stringify(job);
      pause = same && Date.now() - asked < 1000 ? Math.min(30000, Math.max(2000, pause * 2)) : 0;
      job = fresh;
      render();
      await refreshParts();
      if (pause) await new Promise((r) => setTimeout(r, pause * (0.75 + Math.random() / 2)));
    }
    if (mine === generation) await loadEvents();
  }

  job = await fetchJob(false);
  if (!job) return;
  render();
  await refreshParts();
  follow();
}

async function opsPage() {
  if (session.role === 'researcher') {
    main.replaceChildren(h('h1', {}, 'Operations'),
      h('p', { id: 'ops-denied', class: 'muted' }, 'Operations are for operators and admins.'));
    return;
  }
  const admin = session.role === 'admin';
  const intake = h('div', { id: 'intake' });
  const scopes = h('tbody');
  const pauses = h('tbody');
  const note = h('div', { id: 'ops-note' });
  const target = h('input', { id: 'pause-target', list: 'pause-targets', placeholder: 'all, scope:aws:1, owner:alice, job:12' });
  const targets = h('datalist', { id: 'pause-targets' });
  const reason = h('input', { id: 'pause-reason', maxlength: '500', placeholder: 'why (shown on held jobs)' });
  const now = h('input', { id: 'pause-now', type: 'checkbox' });
  const pauseForm = admin ? h('div', { class: 'row' }, target, targets, reason,
    h('label', {}, now, ' hand back running tasks now'),
    h('button', { id: 'pause', class: 'danger', onclick: pause }, 'Pause')) : '';
  main.replaceChildren(
    h('h1', {}, 'Operations'), note,
    h('h2', {}, 'Intake'), h('section', {}, intake),
    h('h2', {}, 'Backlog and budgets by scope'),
    h('section', {}, table('scopes', ['Scope', 'Pending', 'Running', 'Est. calls', 'Drains in', 'Rate (effective / set)', 'Budget use', 'Breaker', ''], scopes)),
    h('h2', {}, 'Pauses'),
    h('section', {}, table('pauses', ['Target', 'Reason', 'By', 'Since', ''], pauses), pauseForm),
    admin ? '' : h('p', { class: 'muted', id: 'read-only' }, 'Operators read; admins change.'),
  );

  /** Asks, then makes the change; whether it was made. */
  async function change(question, method, path, body) {
    const asked = await confirmAction(question);
    if (!asked) return false;
    let made = false;
    try {
      await api(method, path, body);
      note.replaceChildren();
      made = true;
    } catch (e) {
      note.replaceChildren(failure(e));
    }
    await load();
    return made;
  }
  async function pause() {
    const t = target.value.trim();
    if (!t || !reason.value.trim()) {
      note.replaceChildren(h('p', { class: 'error' }, 'A pause needs a target and a reason.'));
      return;
    }
    if (await change(`Pause ${t}? Nothing of it is released until it is resumed.`, 'POST', '/v1/admin/pauses',
      { target: t, reason: reason.value.trim(), now: now.checked })) {
      target.value = '';
      reason.value = '';
      now.checked = false;
    }
  }
  async function load() {
    try {
      const [backlog, budgets, breakers, held, gate, lakes] = await Promise.all(
        ['admin/backlog', 'admin/budgets', 'admin/breakers', 'admin/pauses', 'admin/intake', 'lakes']
          .map((p) => api('GET', `/v1/${p}`).then((r) => r.data)));
      // Every scope a lake is in, or work, a budget or a breaker names.
      const names = new Set([...lakes.map((l) => l.scope), ...backlog.scopes.map((s) => s.scope),
        ...budgets.map((b) => b.scope), ...breakers.map((b) => b.scope)]);
      const by = (list) => Object.fromEntries(list.map((x) => [x.scope, x]));
      const [bl, bu, br] = [by(backlog.scopes), by(budgets), by(breakers)];
      scopes.replaceChildren(...[...names].sort().map((s) => {
        const b = bl[s] || {};
        const budget = bu[s];
        const breaker = br[s];
        const open = breaker && breaker.state !== 'closed';
        return h('tr', { 'data-scope': s },
          h('td', {}, s), h('td', { class: 'num' }, b.pending ?? 0), h('td', { class: 'num' }, b.running ?? 0),
          h('td', { class: 'num' }, b.est_calls ?? 0), h('td', {}, dur(b.drain_secs)),
          h('td', {}, budget ? `${budget.effective_rate.toFixed(1)} / ${budget.rate}/s` : 'unlimited'),
          h('td', { class: 'num' }, budget ? `${Math.round(budget.utilisation * 100)} %` : ''),
          h('td', {}, breaker ? `${breaker.state}${breaker.frozen ? ' (frozen)' : ''}` : 'closed'),
          h('td', {}, admin && open ? h('button', { class: 'danger', 'data-reset': s,
            onclick: () => change(`Close the breaker of ${s}? Its scope ramps up from slow start.`, 'POST',
              `/v1/admin/breakers/${encodeURIComponent(s)}/reset`) }, 'Reset breaker') : ''));
      }));
      targets.replaceChildren(h('option', { value: 'all' }), [...names].filter((s) => s !== '*').sort().map((s) => h('option', { value: `scope:${s}` })));
      pauses.replaceChildren(...held.map((p) => h('tr', { 'data-pause': p.target },
        h('td', {}, p.target), h('td', {}, p.reason), h('td', {}, p.by), h('td', {}, when(p.at)),
        h('td', {}, admin ? h('button', { 'data-resume': p.target,
          onclick: () => change(`Resume ${p.target}? Its work is released again, ramping up.`, 'POST', '/v1/admin/resume', { target: p.target }) }, 'Resume') : ''))));
      if (!held.length) pauses.replaceChildren(h('tr', {}, h('td', { colspan: '5', class: 'muted' }, 'Nothing is paused.')));
      intake.replaceChildren(
        h('p', { id: 'intake-state' }, gate.open ? 'Open: new hunts are accepted.' : `Draining since ${when(gate.since)} (${gate.by}): ${gate.reason}`,
          ` ${gate.pending} pending, ${gate.running} running.`),
        admin ? (gate.open
          ? h('button', { id: 'drain', class: 'danger', onclick: async () => {
            const asked = await confirmAction('Drain: refuse new hunts until the backlog is empty and intake reopens?', true);
            if (!asked) return;
            try {
              await api('POST', '/v1/admin/drain', { reason: asked.reason || 'drain from the console' });
            } catch (e) {
              note.replaceChildren(failure(e));
            }
            load();
          } }, 'Drain')
          : h('button', { id: 'reopen', onclick: () => change('Reopen intake for new hunts?', 'POST', '/v1/admin/drain/end') }, 'Reopen intake')) : '');
    } catch (e) {
      note.replaceChildren(failure(e));
    }
  }
  await every(5000, load);
}

async function start() {
  const path = location.pathname;
  if (path === '/signin') {
    signinPage();
    return;
  }
  try {
    session = (await api('GET', '/ui/session')).data;
  } catch (e) {
    if (e.status !== 401) main.replaceChildren(failure(e));
    return;
  }
  nav();
  const job = path.match(/^\/jobs\/([1-9][0-9]{0,17})$/);
  if (path === '/') await jobsPage();
  else if (path === '/hunt') await huntPage();
  else if (path === '/ops') await opsPage();
  else if (job) await jobPage(job[1]);
  else main.replaceChildren(h('p', { class: 'error' }, 'No such page.'));
}

start();
