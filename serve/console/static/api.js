// The HTTP API, called with the key the user typed in. The key lives in this tab's session storage
// only: never in local storage, a cookie or a URL, and never written to the page or the console log.

const KEY = "aligner.key";
// The app's root, whatever prefix it is served under: the page is <root>console.
export const root = location.pathname.replace(/console\/?$/, "");

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => (value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, error) {
    const field = error.field ? ` (${error.field})` : "";
    super(`${status} ${error.code}${field}: ${error.message}`);
    this.status = status;
    this.code = error.code;
  }
}

function options(method, body) {
  const headers = { Authorization: `Bearer ${key.get() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
    referrerPolicy: "no-referrer",
  };
}

async function failure(reply) {
  const text = await reply.text();
  let error;
  try {
    error = JSON.parse(text).error;
  } catch {
    error = null;
  }
  return new ApiError(reply.status, error ?? { code: "http_error", message: text.slice(0, 300) });
}

export async function call(method, path, body) {
  const reply = await fetch(root + path, options(method, body));
  if (!reply.ok) throw await failure(reply);
  return reply.status === 204 ? null : reply.json();
}

export async function publicJson(path) {
  const reply = await fetch(root + path, { credentials: "omit", cache: "no-store" });
  if (!reply.ok) throw await failure(reply);
  return reply.json();
}

// POST a streamed request; yields {event, data} for every server-sent event until the stream ends.
export async function* stream(path, body, signal) {
  const reply = await fetch(root + path, { ...options("POST", body), signal });
  if (!reply.ok) throw await failure(reply);
  const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}
