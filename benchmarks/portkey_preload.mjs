// Preloaded into the Portkey gateway (@portkey-ai/gateway 1.15.2) with
// `node --import`; run.py does this. It changes two things:
//
// 1. Every TCP server binds to 127.0.0.1. Portkey takes --port but no host,
//    and @hono/node-server then listens on every interface, while the
//    benchmark keeps all traffic on loopback. Any other host throws.
// 2. Every fetch() response is copied into a new Response. Portkey relays
//    an OpenAI stream as the Response that fetch() returned and then appends
//    its x-portkey-* headers to it, which Node.js 20's fetch forbids
//    (TypeError: immutable), so each streaming request fails with
//    {"status":"failure","message":"Something went wrong"}. Upstream
//    report: https://github.com/Portkey-AI/gateway/issues/1550. The copy
//    costs one object per request.
import net from "node:net";

const LOOPBACK = "127.0.0.1";
const LOOPBACK_HOSTS = new Set([LOOPBACK, "localhost", "::1"]);
const originalListen = net.Server.prototype.listen;

function checkHost(host) {
  if (!LOOPBACK_HOSTS.has(host)) {
    throw new Error(`refusing to listen on ${host}: only loopback is allowed`);
  }
}

net.Server.prototype.listen = function listenOnLoopback(...args) {
  const [first] = args;
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback]): a missing host is
    // undefined or the callback in second place.
    if (args.length < 2 || args[1] === undefined || typeof args[1] === "function") {
      args.splice(1, args[1] === undefined ? 1 : 0, LOOPBACK);
    } else if (typeof args[1] === "string") {
      checkHost(args[1]);
    }
  } else if (first !== null && typeof first === "object" && first.path === undefined) {
    args[0] = { ...first, host: first.host ?? LOOPBACK };
    checkHost(args[0].host);
  }
  return originalListen.apply(this, args);
};

const originalFetch = globalThis.fetch;

globalThis.fetch = async function fetchWithMutableHeaders(...args) {
  const response = await originalFetch(...args);
  return new Response(response.body, response);
};
