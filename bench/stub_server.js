// Fixed-latency stub replica for bench/gateway.py: `node bench/stub_server.js PORT DELAY_MS`.
//
// Node's http module on one core answers tens of thousands of small requests
// per second, so the stub is never what a gateway benchmark measures.
//   POST /invoke                {"inputs": {...}}  -> {"echo": inputs, "replica": "bench"}
//   POST /v1/chat/completions   OpenAI shape, with usage (for LiteLLM and compoundry's OpenAI API)
//   GET  /readyz, /livez, /health -> {"status": "ok"}
// Every answer waits DELAY_MS (setTimeout; 0 answers on the next tick).
"use strict";
const http = require("http");

const port = parseInt(process.argv[2] || "8999", 10);
const delay = parseFloat(process.argv[3] || "5");

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {"Content-Type": "application/json", "Content-Length": Buffer.byteLength(body)});
  res.end(body);
}

function later(fn) {
  if (delay > 0) setTimeout(fn, delay); else setImmediate(fn);
}

const server = http.createServer((req, res) => {
  if (req.method === "GET") {
    return reply(res, 200, {status: "ok"});
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body = {};
    try { body = JSON.parse(Buffer.concat(chunks).toString() || "{}"); } catch (e) {
      return reply(res, 400, {error: "invalid JSON"});
    }
    if (req.url === "/invoke") {
      return later(() => reply(res, 200, {echo: body.inputs, replica: "bench"}));
    }
    if (req.url.endsWith("/chat/completions")) {
      const messages = body.messages || [{content: ""}];
      const text = String(messages[messages.length - 1].content);
      return later(() => reply(res, 200, {
        id: "chatcmpl-stub", object: "chat.completion", created: 0, model: body.model || "stub",
        choices: [{index: 0, message: {role: "assistant", content: text}, finish_reason: "stop"}],
        usage: {prompt_tokens: 1, completion_tokens: 1, total_tokens: 2},
      }));
    }
    reply(res, 404, {error: `no route ${req.url}`});
  });
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;
server.listen(port, "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
