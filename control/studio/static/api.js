// The studio's JSON API over fetch: every error becomes an ApiError carrying the server's
// {error: {code, message}} (or a plain description when the studio itself is not answering).

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;      // HTTP status, 0 when the studio did not answer at all
    this.code = code;          // the error code of the body, e.g. device_unreachable
    this.body = body;          // the whole parsed body (409 edited_elsewhere carries `current`)
  }
}

export async function api(method, path, body, headers = {}) {
  // priority high: a page of lazy thumbnails may hold the browser's connections to the studio;
  // the JSON a person waits for goes first.
  const init = { method, headers: { Accept: 'application/json', ...headers }, cache: 'no-store', priority: 'high' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    throw new ApiError(0, 'studio_unreachable', 'the studio is not answering (is `deeplens-ctl studio` still running?)');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (exc) { data = null; }
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    const message = error.message || (text && !data ? text.slice(0, 200) : `${response.status} ${response.statusText}`);
    throw new ApiError(response.status, error.code || `http_${response.status}`, message, data);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);
export const put = (path, body, headers) => api('PUT', path, body, headers);
export const del = (path, headers) => api('DELETE', path, undefined, headers);

/** One line for a person: the message, with the code when it adds something. */
export function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) return `the token is wrong: ${error.message}`;
    return error.code && !error.code.startsWith('http_') ? `${error.message} (${error.code})` : error.message;
  }
  return String(error && error.message ? error.message : error);
}

export const enc = encodeURIComponent;
