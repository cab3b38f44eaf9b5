// The server's JSON endpoints: the CSRF token on every write, 401 turned into the login form.

let csrfToken = null;
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

// 404 means a server without the login layer: auth is off.
export async function loadSession() {
  const response = await fetch('/auth/session', { credentials: 'same-origin' });
  if (response.status === 404) return { auth_required: false, user: null, csrf_token: null };
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  const session = await response.json();
  csrfToken = session.csrf_token;
  return session;
}

export async function login(username, password) {
  const response = await fetch('/auth/login', {
    method: 'POST', credentials: 'same-origin', headers: writeHeaders(),
    body: JSON.stringify({ username, password }),
  });
  if (response.status === 429) {
    const wait = response.headers.get('Retry-After');
    throw new ApiError(429, `Too many attempts; try again${wait ? ` in ${wait} s` : ' later'}.`);
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  const session = await response.json();
  csrfToken = session.csrf_token;
  return session;
}

// Ends the session on the server; the cookie is cleared by its answer.
export async function logout() {
  const response = await write('/auth/logout', { method: 'POST' });
  csrfToken = null;
  if (!response.ok && response.status !== 401) throw new ApiError(response.status, await errorMessage(response));
}

// A write refused for a stale CSRF token (the session was renewed in another tab) is sent once
// more with the current session's token.
export async function write(path, init) {
  const send = () => fetch(path, { ...init, credentials: 'same-origin', headers: writeHeaders() });
  const response = await send();
  if (response.status !== 403 || (await errorCode(response.clone())) !== 'csrf_token_invalid') return response;
  await loadSession();
  return send();
}

export function writeHeaders() {
  const headers = { 'Content-Type': 'application/json' };
  if (csrfToken) headers['X-CSRF-Token'] = csrfToken;
  return headers;
}

async function errorCode(response) {
  try {
    return (await response.json())?.error?.code;
  } catch {
    return null;
  }
}

export async function errorMessage(response) {
  try {
    const body = await response.json();
    return body?.error?.message || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// A response that is not OK becomes an ApiError; 401 also asks for a login.
export async function checked(response) {
  if (response.status === 401) {
    onUnauthorized();
    throw new ApiError(401, 'Sign in to continue.');
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response;
}

async function call(method, path, body) {
  const init = { method, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) };
  const response = await checked(await (method === 'GET' ? fetch(path, init) : write(path, init)));
  return response.status === 204 ? null : response.json();
}

const base = '/api/conversations';

export const conversations = {
  list: (query) => call('GET', `${base}?q=${encodeURIComponent(query || '')}`),
  create: (body) => call('POST', base, body),
  get: (id) => call('GET', `${base}/${encodeURIComponent(id)}`),
  update: (id, body) => call('PATCH', `${base}/${encodeURIComponent(id)}`, body),
  remove: (id) => call('DELETE', `${base}/${encodeURIComponent(id)}`),
  addMessage: (id, body) => call('POST', `${base}/${encodeURIComponent(id)}/messages`, body),
  removeMessage: (id, messageId) => call('DELETE', `${base}/${encodeURIComponent(id)}/messages/${messageId}`),
};

export const serverStatus = () => call('GET', '/v1/status');
