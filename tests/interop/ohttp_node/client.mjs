// An Oblivious HTTP (RFC 9458) client built only from code trustserve did not write:
// HPKE from @hpke/core, Binary HTTP (RFC 9292) from bhttp-js, HKDF and AES-GCM from
// WebCrypto. It checks trustserve's gateway against an independent implementation.
//
//   node client.mjs exchange KEY_CONFIG METHOD URL [--header name:value]... [--body-file F] [--no-date]
//     Prints the encapsulated request (hex) as one line, then reads the encapsulated
//     response (hex) as one line from stdin and prints the inner response as JSON:
//     {"status": 200, "headers": {...}, "body": "<utf-8 text>" | null, "body_b64": "..."}.
//     The HPKE context never leaves this process: a driver (a test) answers in between.
//
//   node client.mjs send GATEWAY_URL MODEL VERSION [--key-config KC] [--via RELAY_URL]
//                        [--path P] [--content-type T] [--body-file F | --body TEXT]
//     Encapsulates `POST /v2/models/MODEL/versions/VERSION/infer` (or --path) carrying the
//     body (stdin when neither --body nor --body-file is given), POSTs it as
//     message/ohttp-req to GATEWAY_URL/v2/ohttp/MODEL/VERSION (or to --via, a relay),
//     and prints the inner response as JSON like `exchange`. Without --key-config the key
//     configs come from GATEWAY_URL/.well-known/ohttp-gateway (application/ohttp-keys).
//
// KEY_CONFIG is one RFC 9458 key config (section 3.1), or an application/ohttp-keys list
// (section 3.2), in hex or base64. Exit status: 0 answered, 1 usage or local error,
// 2 the gateway refused (its status and problem are printed on stderr).

import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { BHttpDecoder, BHttpEncoder } from "bhttp-js";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const KEM = 0x0020;
const KDF = 0x0001;
const AEAD = 0x0002; // AES-256-GCM: Nk = 32, Nn = 12, so the response nonce is 32 bytes
const NK = 32;
const NN = 12;
const te = new TextEncoder();

class Refused extends Error {}

function bytesOf(text) {
  const t = text.trim();
  if (/^([0-9a-fA-F]{2})+$/.test(t)) return new Uint8Array(Buffer.from(t, "hex"));
  return new Uint8Array(Buffer.from(t, "base64"));
}

const u16 = (b, i) => (b[i] << 8) | b[i + 1];
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
};

// One key config; null when it is not X25519 offering HKDF-SHA256 / AES-256-GCM.
function parseConfig(c) {
  if (c.length < 3 || u16(c, 1) !== KEM) return null;
  if (c.length < 3 + 32 + 2) throw new Error("key config too short");
  const n = u16(c, 35);
  if (n < 4 || n % 4 || c.length !== 37 + n) throw new Error("key config algorithms malformed");
  for (let i = 37; i < 37 + n; i += 4) {
    if (u16(c, i) === KDF && u16(c, i + 2) === AEAD) return { keyId: c[0], publicKey: c.slice(3, 35) };
  }
  return null;
}

// A single key config, or the first usable one of an application/ohttp-keys list.
function chooseConfig(b) {
  const single = b.length >= 3 && u16(b, 1) === KEM ? (() => { try { return parseConfig(b); } catch { return null; } })() : null;
  if (single) return single;
  for (let i = 0; i < b.length;) {
    if (b.length - i < 2) throw new Error("ohttp-keys list ends inside a length");
    const n = u16(b, i);
    if (b.length - i - 2 < n) throw new Error("ohttp-keys entry longer than the list");
    const found = parseConfig(b.slice(i + 2, i + 2 + n));
    if (found) return found;
    i += 2 + n;
  }
  throw new Error("no key config with X25519 / HKDF-SHA256 / AES-256-GCM");
}

// RFC 9458 section 4.3, with @hpke/core doing HPKE.
async function encapsulate(config, request) {
  const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
  const hdr = new Uint8Array([config.keyId, KEM >> 8, KEM & 0xff, KDF >> 8, KDF & 0xff, AEAD >> 8, AEAD & 0xff]);
  const info = concat(te.encode("message/bhttp request"), new Uint8Array([0]), hdr);
  const recipientPublicKey = await suite.kem.deserializePublicKey(config.publicKey.slice().buffer);
  const sender = await suite.createSenderContext({ recipientPublicKey, info: info.buffer });
  const ct = new Uint8Array(await sender.seal(request.slice().buffer, new ArrayBuffer(0)));
  const enc = new Uint8Array(sender.enc);
  const secret = new Uint8Array(await sender.export(te.encode("message/bhttp response").buffer, Math.max(NN, NK)));
  return { encapsulated: concat(hdr, enc, ct), enc, secret };
}

// RFC 9458 section 4.4: HKDF (Extract with salt enc || nonce, Expand "key"/"nonce") and AES-GCM, from WebCrypto.
async function openResponse(state, data) {
  const nonceSize = Math.max(NN, NK);
  if (data.length < nonceSize + 16) throw new Error("encapsulated response too short");
  const salt = concat(state.enc, data.slice(0, nonceSize));
  const ikm = await crypto.subtle.importKey("raw", state.secret, "HKDF", false, ["deriveBits"]);
  const expand = (label, n) =>
    crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info: te.encode(label) }, ikm, n * 8);
  const key = await crypto.subtle.importKey("raw", await expand("key", NK), "AES-GCM", false, ["decrypt"]);
  const iv = new Uint8Array(await expand("nonce", NN));
  return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv, tagLength: 128 }, key, data.slice(nonceSize)));
}

async function innerRequest(method, url, headers, body, withDate) {
  const h = new Headers();
  for (const line of headers) {
    const at = line.indexOf(":");
    if (at < 1) throw new Error(`--header wants name:value, not ${line}`);
    h.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
  }
  if (withDate && !h.has("date")) h.set("date", new Date().toUTCString());
  const init = { method, headers: h };
  if (body !== null && body.length) init.body = body;
  return new BHttpEncoder().encodeRequest(new Request(url, init));
}

async function describe(bhttpResponse) {
  const res = new BHttpDecoder().decodeResponse(bhttpResponse);
  const body = Buffer.from(await res.arrayBuffer());
  let text = null;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(body); } catch { text = null; }
  return { status: res.status, headers: Object.fromEntries(res.headers.entries()), body: text, body_b64: body.toString("base64") };
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return new Uint8Array(Buffer.concat(chunks));
}

async function exchange(positionals, values) {
  const [keyConfig, method, url] = positionals;
  if (!url) throw new Error("usage: exchange KEY_CONFIG METHOD URL");
  const body = values["body-file"] ? new Uint8Array(readFileSync(values["body-file"])) : null;
  const request = await innerRequest(method, url, values.header ?? [], body, !values["no-date"]);
  const state = await encapsulate(chooseConfig(bytesOf(keyConfig)), request);
  process.stdout.write(Buffer.from(state.encapsulated).toString("hex") + "\n");
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const result = await describe(await openResponse(state, bytesOf(line)));
    process.stdout.write(JSON.stringify(result) + "\n");
    return;
  }
  throw new Error("stdin closed before the encapsulated response came");
}

async function send(positionals, values) {
  const [gateway, model, version] = positionals;
  if (!version) throw new Error("usage: send GATEWAY_URL MODEL VERSION");
  const base = gateway.replace(/\/+$/, "");
  let configBytes;
  if (values["key-config"]) {
    configBytes = bytesOf(values["key-config"]);
  } else {
    const keys = await fetch(`${base}/.well-known/ohttp-gateway`);
    if (!keys.ok) throw new Refused(`key discovery answered ${keys.status}: ${await keys.text()}`);
    configBytes = new Uint8Array(await keys.arrayBuffer());
  }
  const body = values.body !== undefined ? te.encode(values.body)
    : values["body-file"] ? new Uint8Array(readFileSync(values["body-file"])) : await readStdin();
  const path = values.path ?? `/v2/models/${model}/versions/${version}/infer`;
  const headers = [`content-type:${values["content-type"] ?? "application/json"}`, ...(values.header ?? [])];
  const request = await innerRequest("POST", new URL(path, base).href, headers, body, !values["no-date"]);
  const state = await encapsulate(chooseConfig(configBytes), request);
  const target = values.via ?? `${base}/v2/ohttp/${encodeURIComponent(model)}/${encodeURIComponent(version)}`;
  const res = await fetch(target, {
    method: "POST", headers: { "content-type": "message/ohttp-req" }, body: state.encapsulated,
  });
  const answer = new Uint8Array(await res.arrayBuffer());
  if (!res.ok || !(res.headers.get("content-type") ?? "").startsWith("message/ohttp-res")) {
    throw new Refused(`gateway answered ${res.status} ${res.headers.get("content-type")}: ${Buffer.from(answer).toString()}`);
  }
  process.stdout.write(JSON.stringify(await describe(await openResponse(state, answer))) + "\n");
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    header: { type: "string", multiple: true },
    "body-file": { type: "string" },
    body: { type: "string" },
    "key-config": { type: "string" },
    via: { type: "string" },
    path: { type: "string" },
    "content-type": { type: "string" },
    "no-date": { type: "boolean" },
  },
});
const modes = { exchange, send };
const mode = modes[positionals[0]];
try {
  if (!mode) throw new Error("usage: client.mjs exchange|send ... (see the comment at the top)");
  await mode(positionals.slice(1), values);
} catch (err) {
  process.stderr.write(`ohttp client: ${err.message}\n`);
  process.exit(err instanceof Refused ? 2 : 1);
}
