// rtc-signal.js: a dependency-free browser client for the rtc-signal wire
// protocol (the Go/pion demo's, see the README's "Protocol" section).
//
//   import { AnswerPeer, call } from "/rtc-signal.js";
//   const peer = await AnswerPeer.register("ws://127.0.0.1:18080", "alice");
//   peer.addEventListener("call", (e) => { const session = e.detail; ... });
//   const session = await call("ws://127.0.0.1:18080", "alice");
//   session.addEventListener("message", (e) => console.log(e.detail.data));
//   session.send("hello");
//   const room = await Room.join("ws://127.0.0.1:18080", "team", { id: "carol" });
//   room.addEventListener("message", (e) => console.log(e.detail.member, e.detail.text));
//   room.send("hi all");
//
// Frames are text (the server answers text with text); their bytes are what
// the Go demo sends: {"command":N,"payload":"<std base64 of the request>"},
// with Go's field order and string escaping, so Go peers can read them too.

export const Command = Object.freeze({
  INIT: 1,
  ANSWER: 2,
  OFFER: 3,
  CANDIDATE: 4,
  // rooms (rtc-signal's addition, docs/PROTOCOL.md "Rooms"), on the /room path
  JOIN: 5,
  PRESENCE: 6,
  LEAVE: 7,
});
/** A response's command is its request's plus this. */
export const RESPONSE = 100;
export const CANDIDATE_PREFIX = "candidate:";
/** Every wait of this module ends after this many milliseconds at most. */
export const DEFAULT_TIMEOUT_MS = 20000;

export class SignalingError extends Error {
  constructor(message, code = null) {
    super(message);
    this.name = "SignalingError";
    this.code = code;
  }
}

// -- encoding ------------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A JSON string literal escaped as Go's encoding/json escapes it. */
export function goString(value) {
  // JSON.stringify matches Go for quotes, backslashes, \b\f\n\r\t and other
  // control characters; Go also escapes <, >, & and U+2028/U+2029.
  return JSON.stringify(String(value)).replace(
    /[<>&\u2028\u2029]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"),
  );
}

/** Standard base64 with padding (alphabet +/), as Go encodes []byte. */
export function b64encode(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Decode standard padded base64; URL-safe or unpadded text is an error (as in Go). */
export function b64decode(text) {
  if (typeof text !== "string" || !STRICT_BASE64.test(text)) {
    throw new SignalingError("not standard padded base64");
  }
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The frame of a request: ``body`` is a Uint8Array, a string (UTF-8) or null. */
export function encodeRequest(command, source, target, body = null) {
  if (typeof body === "string") body = encoder.encode(body);
  const bodyJson = body === null ? "null" : '"' + b64encode(body) + '"';
  const payload = `{"source":${goString(source)},"target":${goString(target)},"body":${bodyJson}}`;
  return `{"command":${command},"payload":"${b64encode(encoder.encode(payload))}"}`;
}

/** The frame of a response to ``command`` (the request's command). */
export function encodeResponse(command, code = 0, msg = "ok") {
  const payload = `{"code":${code},"msg":${goString(msg)}}`;
  return `{"command":${command + RESPONSE},"payload":"${b64encode(encoder.encode(payload))}"}`;
}

/** The body of an Offer/Answer: {"type":...,"sdp":...} in Go's field order. */
export function encodeDescription(description) {
  return encoder.encode(
    `{"type":${goString(description.type)},"sdp":${goString(description.sdp)}}`,
  );
}

/** Parse an Offer/Answer body; throws SignalingError when it is not one. */
export function decodeDescription(body, expectedType) {
  if (body === null) throw new SignalingError(`${expectedType} without a body`);
  let parsed;
  try {
    parsed = JSON.parse(decoder.decode(body));
  } catch (err) {
    throw new SignalingError(`${expectedType} body is not UTF-8 JSON: ${err.message}`);
  }
  if (parsed === null || parsed.type !== expectedType || typeof parsed.sdp !== "string") {
    throw new SignalingError(`body is not an ${expectedType} description`);
  }
  return { type: parsed.type, sdp: parsed.sdp };
}

/** What a room name may be (the server refuses others with 400). */
export const ROOM_NAME = /^[A-Za-z0-9._-]{1,64}$/;
/** The longest member ID, in characters (as the server counts them). */
export const MAX_MEMBER_ID = 64;

/**
 * Parse a Presence (6) body: {room, event: "members", members: [...]} (the
 * other members, oldest first) or {room, event: "join"|"leave", member}.
 * Throws SignalingError when it is not one.
 */
export function decodePresence(body) {
  if (body === null) throw new SignalingError("presence without a body");
  let parsed;
  try {
    parsed = JSON.parse(decoder.decode(body));
  } catch (err) {
    throw new SignalingError(`presence body is not UTF-8 JSON: ${err.message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new SignalingError("presence body is not a JSON object");
  }
  const { room, event } = parsed;
  if (typeof room !== "string" || !ROOM_NAME.test(room)) {
    throw new SignalingError("presence room is not a room name");
  }
  if (event === "members") {
    const members = parsed.members;
    if (!Array.isArray(members) || !members.every((m) => typeof m === "string" && m)) {
      throw new SignalingError("presence members is not a list of member IDs");
    }
    return { room, event, members };
  }
  if (event === "join" || event === "leave") {
    if (typeof parsed.member !== "string" || !parsed.member) {
      throw new SignalingError("presence member is not a member ID");
    }
    return { room, event, member: parsed.member };
  }
  throw new SignalingError("presence event is not members, join or leave");
}

/**
 * Parse one frame. Returns {command, request: {source, target, body}} for
 * commands 1-7 and {command, response: {code, msg}} for 101-104 (and any
 * other command >= 100); throws SignalingError on anything else.
 */
export function decodeFrame(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch (err) {
    throw new SignalingError(`frame is not JSON: ${err.message}`);
  }
  if (message === null || typeof message !== "object" || !Number.isInteger(message.command)) {
    throw new SignalingError("frame has no integer command");
  }
  let payload;
  try {
    payload = JSON.parse(decoder.decode(b64decode(message.payload)));
  } catch (err) {
    throw new SignalingError(`bad payload: ${err.message}`);
  }
  if (payload === null || typeof payload !== "object") {
    throw new SignalingError("payload is not a JSON object");
  }
  const command = message.command;
  if (command >= RESPONSE) {
    return { command, response: { code: payload.code ?? 0, msg: payload.msg ?? "" } };
  }
  if (command < Command.INIT || command > Command.LEAVE) {
    throw new SignalingError(`unknown command ${command}`);
  }
  const body = payload.body == null ? null : b64decode(payload.body);
  return {
    command,
    request: { source: payload.source ?? "", target: payload.target ?? "", body },
  };
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new SignalingError(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** ``ws://host:port`` + ``/register`` or ``/offer``, with the token if any. */
export function endpoint(server, path, token = null, resume = null) {
  const url = new URL(path, server.replace(/\/*$/, "/"));
  if (token) url.searchParams.set("token", token);
  if (resume) url.searchParams.set("resume", resume);
  return url.toString();
}

/** Reconnect delays: full jitter, exponential up to a bound (like rtc-peer's). */
export function backoffMs(attempt, baseMs = 500, maxMs = 10000) {
  return Math.random() * Math.min(maxMs, baseMs * 2 ** attempt);
}

/** The signaling server's URL for a page it served: same host, ws: or wss:. */
export function defaultServer(location = window.location) {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
}

/**
 * ICE servers from a page's URL parameters: ice=URL[,URL], with iceUsername
 * and iceCredential for turn:/turns: URLs. None by default: nothing public
 * is contacted behind the user's back.
 */
export function iceServersFromParams(params) {
  return (params.get("ice") || "")
    .split(",")
    .filter(Boolean)
    .map((urls) =>
      urls.startsWith("turn")
        ? { urls, username: params.get("iceUsername") || "", credential: params.get("iceCredential") || "" }
        : { urls },
    );
}

// -- signaling connection ------------------------------------------------------

/**
 * One WebSocket to the signaling server. Events: "request" (detail:
 * {command, request}) for frames forwarded by the server, "close" (detail:
 * {code, reason}).
 */
export class Signaling extends EventTarget {
  static async open(url, { timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
    const ws = new WebSocket(url);
    const opened = new Promise((resolve, reject) => {
      ws.addEventListener("open", resolve, { once: true });
      ws.addEventListener(
        "close",
        (e) => reject(new SignalingError(`cannot connect to ${url} (close ${e.code})`, e.code)),
        { once: true },
      );
    });
    try {
      await withTimeout(opened, timeoutMs, `connecting to ${url}`);
    } catch (err) {
      ws.close();
      throw err;
    }
    return new Signaling(ws, timeoutMs);
  }

  constructor(ws, timeoutMs) {
    super();
    this.ws = ws;
    this.timeoutMs = timeoutMs;
    this.closed = false;
    // The server acknowledges each request in order: the oldest waiting
    // request of a command gets the next response to it.
    this.pending = [];
    ws.addEventListener("message", (e) => this._onFrame(e.data));
    ws.addEventListener("close", (e) => {
      this.closed = true;
      for (const p of this.pending.splice(0)) {
        p.reject(new SignalingError(`signaling closed (${e.code} ${e.reason})`, e.code));
      }
      this.dispatchEvent(new CustomEvent("close", { detail: { code: e.code, reason: e.reason } }));
    });
  }

  async _onFrame(data) {
    const text = typeof data === "string" ? data : decoder.decode(new Uint8Array(await data.arrayBuffer()));
    let frame;
    try {
      frame = decodeFrame(text);
    } catch (err) {
      this.dispatchEvent(new CustomEvent("error", { detail: err }));
      return;
    }
    if (frame.response) {
      const i = this.pending.findIndex((p) => p.command + RESPONSE === frame.command);
      if (i >= 0) this.pending.splice(i, 1)[0].resolve(frame.response);
      return;
    }
    this.dispatchEvent(new CustomEvent("request", { detail: frame }));
  }

  /** Send a request; resolves with the server's response, rejects if its code is not 0. */
  request(command, source, target, body = null) {
    if (this.closed) return Promise.reject(new SignalingError("signaling is closed"));
    const answered = new Promise((resolve, reject) => {
      this.pending.push({ command, resolve, reject });
    });
    this.ws.send(encodeRequest(command, source, target, body));
    return withTimeout(answered, this.timeoutMs, `response to command ${command}`).then(
      (response) => {
        if (response.code !== 0) {
          throw new SignalingError(`refused (${response.code}): ${response.msg}`, response.code);
        }
        return response;
      },
    );
  }

  /** Acknowledge a forwarded request, as the Go peers do. */
  acknowledge(command) {
    if (!this.closed) this.ws.send(encodeResponse(command));
  }

  close() {
    this.ws.close(1000);
  }
}

// -- peer sessions -------------------------------------------------------------

/**
 * One RTCPeerConnection with one remote peer, its main data channel ("data"
 * for 1:1 calls, "chat" in rooms: ``channelLabel``) and the tracks it receives. Events: "state" (detail: a summary object), "open",
 * "message" (detail: {data}), "track" (detail: RTCTrackEvent), "close",
 * "error" (detail: Error).
 */
export class PeerSession extends EventTarget {
  constructor({
    signaling,
    localId,
    remoteId,
    iceServers = [],
    localStream = null,
    timeoutMs,
    channelLabel = "data",
  }) {
    super();
    this.channelLabel = channelLabel;
    this.signaling = signaling;
    this.localId = localId;
    this.remoteId = remoteId;
    this.timeoutMs = timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.localStream = localStream;
    this.channel = null;
    this.channels = new Map(); // label -> RTCDataChannel, for extra channels (e.g. "control")
    this.pendingCandidates = [];
    this.remoteSet = false;
    this.closed = false;
    // from the offer being made (or received) to the data channel being open
    this.startedAt = performance.now();
    this.setupMs = null;
    // Explicit servers only (none by default); one transport for everything,
    // so each trickled bare candidate line belongs to m-line 0.
    this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.pc.addEventListener("icecandidate", (e) => {
      const line = e.candidate && e.candidate.candidate;
      if (line) {
        this.signaling
          .request(Command.CANDIDATE, this.localId, this.remoteId, line)
          .catch((err) => {
            // once the channel is open the call no longer needs signaling
            if (!this.channel || this.channel.readyState !== "open") this._fail(err);
          });
      }
    });
    this.pc.addEventListener("track", (e) => this.dispatchEvent(new CustomEvent("track", { detail: e })));
    this.pc.addEventListener("datachannel", (e) => this._adopt(e.channel));
    for (const name of ["connectionstatechange", "iceconnectionstatechange", "signalingstatechange"]) {
      this.pc.addEventListener(name, () => this._stateChanged());
    }
  }

  get state() {
    return {
      signaling: this.pc.signalingState,
      ice: this.pc.iceConnectionState,
      connection: this.pc.connectionState,
      channel: this.channel ? this.channel.readyState : "none",
    };
  }

  _stateChanged() {
    this.dispatchEvent(new CustomEvent("state", { detail: this.state }));
    if (this.pc.connectionState === "failed") {
      this._fail(new SignalingError(`connection with ${this.remoteId} failed`));
    }
  }

  _adopt(channel) {
    if (channel.label !== this.channelLabel || this.channel) {
      this.channels.set(channel.label, channel);
      this.dispatchEvent(new CustomEvent("channel", { detail: channel }));
      return;
    }
    this.channel = channel;
    // A channel announced by the remote side may be open already, and still
    // fire "open" later: announce it once either way.
    let announced = false;
    const announce = () => {
      if (announced) return;
      announced = true;
      this.setupMs = performance.now() - this.startedAt;
      this._stateChanged();
      this.dispatchEvent(new Event("open"));
    };
    channel.addEventListener("open", announce);
    channel.addEventListener("message", (e) => {
      const data = typeof e.data === "string" ? e.data : new Uint8Array(e.data);
      this.dispatchEvent(new CustomEvent("message", { detail: { data } }));
    });
    channel.addEventListener("close", () => {
      this._stateChanged();
      this.close();
    });
    if (channel.readyState === "open") queueMicrotask(announce);
  }

  _fail(err) {
    if (this.closed) return;
    this.dispatchEvent(new CustomEvent("error", { detail: err }));
    this.close();
  }

  _addLocalTracks(receiveMedia) {
    const kinds = new Set();
    if (this.localStream) {
      for (const track of this.localStream.getTracks()) {
        this.pc.addTrack(track, this.localStream);
        kinds.add(track.kind);
      }
    }
    if (receiveMedia) {
      // offer to receive what we do not send, so a camera peer can answer with tracks
      for (const kind of ["audio", "video"]) {
        if (!kinds.has(kind)) this.pc.addTransceiver(kind, { direction: "recvonly" });
      }
    }
  }

  async _setRemote(description) {
    await this.pc.setRemoteDescription(description);
    this.remoteSet = true;
    for (const line of this.pendingCandidates.splice(0)) await this.addRemoteCandidate(line);
  }

  /** Offer side: make the main channel and the offer, send it (resolves once the server took it). */
  async _offer(receiveMedia) {
    this._adopt(this.pc.createDataChannel(this.channelLabel));
    this._addLocalTracks(receiveMedia);
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await this.signaling.request(
      Command.OFFER,
      this.localId,
      this.remoteId,
      encodeDescription(this.pc.localDescription),
    );
  }

  /** Answer side: apply ``offer`` and the candidates that came before it, send the answer. */
  async _answer(offer, earlyCandidates = []) {
    await this._setRemote(offer);
    for (const line of earlyCandidates) await this.addRemoteCandidate(line);
    this._addLocalTracks(false);
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await this.signaling.request(
      Command.ANSWER,
      this.localId,
      this.remoteId,
      encodeDescription(this.pc.localDescription),
    );
  }

  /** Apply a candidate the remote peer trickled (kept until its description is set). */
  async addRemoteCandidate(line) {
    if (!this.remoteSet) {
      this.pendingCandidates.push(line);
      return;
    }
    if (!line) return; // an empty body: end of candidates, nothing to add
    try {
      await this.pc.addIceCandidate({ candidate: line, sdpMLineIndex: 0 });
    } catch (err) {
      this.dispatchEvent(new CustomEvent("warning", { detail: `bad candidate ${line}: ${err.message}` }));
    }
  }

  /** Resolves when the data channel is open; rejects on failure or timeout. */
  opened() {
    if (this.channel && this.channel.readyState === "open") return Promise.resolve(this);
    const open = new Promise((resolve, reject) => {
      this.addEventListener("open", () => resolve(this), { once: true });
      this.addEventListener("error", (e) => reject(e.detail), { once: true });
      this.addEventListener("close", () => reject(new SignalingError("closed before open")), { once: true });
    });
    return withTimeout(open, this.timeoutMs, `data channel with ${this.remoteId}`).catch((err) => {
      this._fail(err);
      throw err;
    });
  }

  send(data) {
    if (!this.channel || this.channel.readyState !== "open") {
      throw new SignalingError(`no open data channel with ${this.remoteId}`);
    }
    this.channel.send(data);
  }

  /** Another data channel on the same connection (e.g. "control"); resolves once open. */
  async openChannel(label) {
    let channel = this.channels.get(label);
    if (!channel) {
      channel = this.pc.createDataChannel(label);
      this.channels.set(label, channel);
    }
    if (channel.readyState !== "open") {
      await withTimeout(
        new Promise((resolve, reject) => {
          channel.addEventListener("open", resolve, { once: true });
          channel.addEventListener("close", () => reject(new SignalingError(`${label} closed`)), {
            once: true,
          });
        }),
        this.timeoutMs,
        `${label} channel`,
      );
    }
    return channel;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    try {
      this.pc.close();
    } finally {
      this.dispatchEvent(new Event("close"));
    }
  }
}

/** Candidates that came before their peer's offer, per peer; bounded, so a peer cannot fill memory. */
class EarlyCandidates {
  constructor(maxPeers = 64, maxLines = 64) {
    this.maxPeers = maxPeers;
    this.maxLines = maxLines;
    this.lines = new Map(); // peer id -> candidate lines
  }

  keep(peer, line) {
    let lines = this.lines.get(peer);
    if (!lines) {
      if (this.lines.size >= this.maxPeers) return;
      lines = [];
      this.lines.set(peer, lines);
    }
    if (lines.length < this.maxLines) lines.push(line);
  }

  /** The lines kept for ``peer`` (forgotten here). */
  take(peer) {
    const lines = this.lines.get(peer) ?? [];
    this.lines.delete(peer);
    return lines;
  }
}

function randomHex(bytes) {
  const random = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomId(prefix) {
  return prefix + "-" + randomHex(4);
}

/**
 * Call the answer peer ``target``: resolves with the PeerSession once the
 * offer is accepted by the server (wait for ``session.opened()`` for the
 * channel). Options: id, token, iceServers, localStream, receiveMedia (offer
 * to receive audio and video; default true), timeoutMs.
 */
export async function call(server, target, options = {}) {
  const {
    id = randomId("browser"),
    token = null,
    iceServers = [],
    localStream = null,
    receiveMedia = true,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  } = options;
  const signaling = await Signaling.open(endpoint(server, "/offer", token), { timeoutMs });
  const session = new PeerSession({ signaling, localId: id, remoteId: target, iceServers, localStream, timeoutMs });
  session.addEventListener("close", () => signaling.close());
  signaling.addEventListener("close", () => {
    // the call goes on peer to peer; only a call still negotiating needs signaling
    if (!session.channel || session.channel.readyState !== "open") {
      session._fail(new SignalingError("signaling closed before the channel opened"));
    }
  });
  signaling.addEventListener("request", async (e) => {
    const { command, request } = e.detail;
    signaling.acknowledge(command);
    if (request.source !== target) {
      // only the peer we called may answer or send candidates (the server
      // refuses others too; this holds against a server that does not)
      console.warn(`rtc-signal: ignoring command ${command} from ${JSON.stringify(String(request.source).slice(0, 64))}: we called ${JSON.stringify(target)}`);
      return;
    }
    try {
      if (command === Command.ANSWER) {
        await session._setRemote(decodeDescription(request.body, "answer"));
      } else if (command === Command.CANDIDATE) {
        await session.addRemoteCandidate(request.body === null ? "" : decoder.decode(request.body));
      }
    } catch (err) {
      session._fail(err);
    }
  });
  try {
    await session._offer(receiveMedia);
  } catch (err) {
    session._fail(err);
    throw err;
  }
  return session;
}

/**
 * An answer peer registered under ``id``: every offer becomes a PeerSession,
 * announced by a "call" event (detail: the session). Also "close" (signaling
 * closed) and "warning" events.
 */
export class AnswerPeer extends EventTarget {
  /**
   * Register ``id``; rejects if the first registration fails. Afterwards a
   * lost signaling connection is reconnected with backoff (unless
   * ``reconnect: false``) and the ID registered again, with a resume key so
   * that the server keeps the ID for us meanwhile; calls in progress go on
   * (they are peer to peer). Events: "call", "reconnecting" (detail:
   * {attempt, delayMs, code}), "registered" (detail: {again}), "close".
   */
  static async register(server, id, options = {}) {
    // unguessable: while the server holds our ID, only this key gets it back
    const resume = randomHex(16);
    const signaling = await AnswerPeer._signIn(server, id, resume, options);
    return new AnswerPeer(signaling, id, { ...options, server, resume });
  }

  static async _signIn(server, id, resume, { token = null, timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
    const url = endpoint(server, "/register", token, resume);
    const signaling = await Signaling.open(url, { timeoutMs });
    try {
      await signaling.request(Command.INIT, id, "", null);
    } catch (err) {
      signaling.close();
      throw err;
    }
    return signaling;
  }

  constructor(signaling, id, options = {}) {
    super();
    const { iceServers = [], localStream = null, timeoutMs = DEFAULT_TIMEOUT_MS } = options;
    this.id = id;
    this.options = options;
    this.iceServers = iceServers;
    this.localStream = localStream;
    this.timeoutMs = timeoutMs;
    this.reconnect = options.reconnect !== false && Boolean(options.server);
    this.closed = false;
    this.retryTimer = null;
    this.sessions = new Map(); // caller id -> PeerSession
    // candidates that arrive before their caller's offer
    this.early = new EarlyCandidates();
    this._attach(signaling);
  }

  _attach(signaling) {
    this.signaling = signaling;
    signaling.addEventListener("request", (e) => this._onRequest(e.detail));
    signaling.addEventListener("close", (e) => this._lost(e.detail, 0));
  }

  _lost(detail, attempt) {
    if (this.closed || !this.reconnect) {
      this.dispatchEvent(new CustomEvent("close", { detail }));
      return;
    }
    const delayMs = backoffMs(attempt);
    this.dispatchEvent(
      new CustomEvent("reconnecting", { detail: { attempt: attempt + 1, delayMs, code: detail.code } }),
    );
    this.retryTimer = setTimeout(async () => {
      this.retryTimer = null;
      if (this.closed) return;
      try {
        const signaling = await AnswerPeer._signIn(this.options.server, this.id, this.options.resume, this.options);
        if (this.closed) {
          signaling.close();
          return;
        }
        this._attach(signaling);
        this.dispatchEvent(new CustomEvent("registered", { detail: { again: true } }));
      } catch (err) {
        this._lost({ code: err.code ?? 1006, reason: err.message }, attempt + 1);
      }
    }, delayMs);
  }

  async _onRequest({ command, request }) {
    this.signaling.acknowledge(command);
    const caller = request.source;
    if (command === Command.OFFER) {
      let offer;
      try {
        offer = decodeDescription(request.body, "offer");
      } catch (err) {
        this._warn(`bad offer from ${caller}: ${err.message}`);
        return;
      }
      const previous = this.sessions.get(caller);
      if (previous) previous.close(); // a caller that calls again starts afresh
      const session = new PeerSession({
        signaling: this.signaling,
        localId: this.id,
        remoteId: caller,
        iceServers: this.iceServers,
        localStream: this.localStream,
        timeoutMs: this.timeoutMs,
      });
      this.sessions.set(caller, session);
      session.addEventListener("close", () => {
        if (this.sessions.get(caller) === session) this.sessions.delete(caller);
      });
      this.dispatchEvent(new CustomEvent("call", { detail: session }));
      const early = this.early.take(caller);
      try {
        await session._answer(offer, early);
      } catch (err) {
        session._fail(err);
      }
    } else if (command === Command.CANDIDATE) {
      const line = request.body === null ? "" : decoder.decode(request.body);
      const session = this.sessions.get(caller);
      if (session) {
        await session.addRemoteCandidate(line);
      } else {
        this.early.keep(caller, line);
      }
    } else {
      this._warn(`ignoring command ${command} from ${caller}`);
    }
  }

  _warn(text) {
    this.dispatchEvent(new CustomEvent("warning", { detail: text }));
  }

  close() {
    this.closed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    for (const session of this.sessions.values()) session.close();
    this.signaling.close();
  }
}

// -- rooms ---------------------------------------------------------------------

/** The label of a room's data channel (one per pair of members). */
export const CHAT_LABEL = "chat";
// chat text from a member that sends binary frames: shown, never an exception
const lenientDecoder = new TextDecoder("utf-8");

/**
 * A member of a room (docs/PROTOCOL.md, "Rooms"): one signaling connection
 * on /room and one PeerSession with every other member, a full mesh. For
 * every pair the member that joined LATER offers, the earlier one waits for
 * that offer, so two members never offer to each other at once (no glare).
 *
 *   const room = await Room.join(server, "team", { id: "carol", localStream });
 *   room.addEventListener("track", (e) => show(e.detail.member, e.detail.stream));
 *   room.addEventListener("message", (e) => log(e.detail.member, e.detail.text));
 *   room.send("hi all");
 *   await room.leave();
 *
 * Events (CustomEvent, ``detail``):
 * - "join" {member}: a member joined; it offers to us.
 * - "leave" {member}: a member left (Leave, closed, or dropped by the
 *   server's keepalive); its connection is closed.
 * - "connect" {member, session}: the chat channel with a member is open.
 * - "disconnect" {member}: the connection with a member that is still in
 *   the room ended (failed, or not open within ``timeoutMs``).
 * - "track" {member, track, stream}: a media track from a member (``stream``:
 *   one MediaStream per member, holding all its tracks).
 * - "message" {member, text}: a chat message from a member.
 * - "warning" {member, text}: something ignored (a bad frame, an offer
 *   against the mesh rule, a member that never offered).
 * - "error" {member, error}: the connection with a member failed.
 * - "close" {code, reason}: we are out of the room (leave(), or the
 *   signaling connection was lost: the server then tells the others).
 */
export class Room extends EventTarget {
  /**
   * Join ``room`` on ``server``; resolves once joined (the offers to the
   * members already there are under way: see ``members`` and the events).
   * Options: id (default browser-<random>), token, iceServers (default
   * none), localStream (sent to every member), receiveMedia (offer to
   * receive audio and video; default true), timeoutMs (every wait).
   * Rejects with a SignalingError whose ``code`` is the server's (400 bad
   * name, 403 token, 409 ID taken, 503 room full) if the Join is refused.
   */
  static async join(server, room, options = {}) {
    const { id = randomId("browser"), token = null, timeoutMs = DEFAULT_TIMEOUT_MS } = options;
    if (typeof room !== "string" || !ROOM_NAME.test(room)) {
      throw new SignalingError(`bad room name ${goString(String(room).slice(0, 80))}: 1-64 of A-Z a-z 0-9 . _ -`, 400);
    }
    if (typeof id !== "string" || !id || [...id].length > MAX_MEMBER_ID) {
      throw new SignalingError(`a member ID has 1-${MAX_MEMBER_ID} characters`, 400);
    }
    const signaling = await Signaling.open(endpoint(server, "/room", token), { timeoutMs });
    const self = new Room(signaling, room, id, { ...options, timeoutMs });
    try {
      // the member list follows the Join's 105 at once: listen before asking
      const listed = self._listed;
      await signaling.request(Command.JOIN, id, room, null);
      await withTimeout(listed, timeoutMs, `member list of room ${room}`);
    } catch (err) {
      self._shutdown({ code: err.code ?? 1006, reason: err.message }, false);
      throw err;
    }
    return self;
  }

  constructor(signaling, room, id, options = {}) {
    super();
    const {
      iceServers = [],
      localStream = null,
      receiveMedia = true,
      timeoutMs = DEFAULT_TIMEOUT_MS,
    } = options;
    this.signaling = signaling;
    this.room = room;
    this.id = id;
    this.iceServers = iceServers;
    this.localStream = localStream;
    this.receiveMedia = receiveMedia;
    this.timeoutMs = timeoutMs;
    this.closed = false;
    this.leaving = false;
    // member id -> {role: "offer" (it joined before us: we offer) or
    // "answer" (it joined after us: it offers), session, stream, timer};
    // in the order they joined
    this.peers = new Map();
    this.early = new EarlyCandidates();
    this._listed = new Promise((resolve) => {
      this._resolveListed = resolve;
    });
    signaling.addEventListener("request", (e) => this._onRequest(e.detail));
    signaling.addEventListener("error", (e) => this._warn("", `bad frame: ${e.detail.message}`));
    signaling.addEventListener("close", (e) => this._shutdown(e.detail));
  }

  /** The other members, in the order they joined. */
  get members() {
    return Array.from(this.peers.keys());
  }

  /** member id -> PeerSession, for the members we have a connection with. */
  get sessions() {
    const sessions = new Map();
    for (const [member, peer] of this.peers) if (peer.session) sessions.set(member, peer.session);
    return sessions;
  }

  /** Whether the chat channel with ``member`` is open. */
  connected(member) {
    const session = this.peers.get(member)?.session;
    return Boolean(session && session.channel && session.channel.readyState === "open");
  }

  /** Send ``text`` to every member whose chat channel is open; returns those members. */
  send(text) {
    const reached = [];
    for (const [member, peer] of this.peers) {
      if (!this.connected(member)) continue;
      try {
        peer.session.send(String(text));
        reached.push(member);
      } catch (err) {
        this._warn(member, `cannot send: ${err.message}`);
      }
    }
    return reached;
  }

  /** Leave the room: Leave (7), bounded by ``timeoutMs``, then close every connection. */
  async leave() {
    if (this.closed || this.leaving) return;
    // the others close their connections with us as soon as the server tells
    // them: from now on a connection ending is no news
    this.leaving = true;
    try {
      await this.signaling.request(Command.LEAVE, this.id, this.room, null);
    } catch (err) {
      // closing the signaling connection below leaves the room as well
      this._warn("", `leave: ${err.message}`);
    }
    this._shutdown({ code: 1000, reason: "left the room" });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _warn(member, text) {
    this._emit("warning", { member, text });
  }

  _shutdown(detail, announce = true) {
    if (this.closed) return;
    this.closed = true;
    const peers = Array.from(this.peers.values());
    this.peers.clear();
    for (const peer of peers) {
      clearTimeout(peer.timer);
      if (peer.session) peer.session.close();
    }
    this.signaling.close();
    if (announce) this._emit("close", detail);
  }

  _onRequest({ command, request }) {
    if (this.closed) return;
    this.signaling.acknowledge(command);
    const member = request.source;
    try {
      if (command === Command.PRESENCE) {
        this._onPresence(decodePresence(request.body));
      } else if (member === this.id || !member) {
        this._warn(member, `ignoring command ${command} from ourselves`);
      } else if (command === Command.OFFER) {
        this._onOffer(member, decodeDescription(request.body, "offer"));
      } else if (command === Command.ANSWER) {
        this._onAnswer(member, decodeDescription(request.body, "answer"));
      } else if (command === Command.CANDIDATE) {
        const line = request.body === null ? "" : decoder.decode(request.body);
        const session = this.peers.get(member)?.session;
        if (session) session.addRemoteCandidate(line);
        else this.early.keep(member, line);
      } else {
        this._warn(member, `ignoring command ${command}`);
      }
    } catch (err) {
      this._warn(member, `ignoring command ${command}: ${err.message}`);
    }
  }

  _onPresence(presence) {
    if (presence.room !== this.room) {
      this._warn("", `ignoring presence of room ${presence.room}`);
      return;
    }
    if (presence.event === "members") {
      // everyone already there joined before us: we offer to each
      for (const member of presence.members) {
        if (member === this.id || this.peers.has(member)) continue;
        this._offerTo(this._addPeer(member, "offer"));
      }
      this._resolveListed(presence.members);
      return;
    }
    const member = presence.member;
    if (member === this.id) return;
    if (presence.event === "join") {
      this._removePeer(member); // a member that joins again starts afresh
      const peer = this._addPeer(member, "answer");
      // the newcomer offers; a newcomer that never does is reported, not waited for forever
      peer.timer = setTimeout(() => {
        if (this.peers.get(member) === peer && !peer.session) {
          this._warn(member, `no offer from ${member} within ${this.timeoutMs} ms`);
        }
      }, this.timeoutMs);
      this._emit("join", { member });
    } else if (this._removePeer(member)) {
      this._emit("leave", { member });
    }
  }

  _addPeer(member, role) {
    const peer = { member, role, session: null, stream: null, timer: null };
    this.peers.set(member, peer);
    return peer;
  }

  /** Forget ``member`` and close our connection with it; whether it was a member. */
  _removePeer(member) {
    const peer = this.peers.get(member);
    this.early.take(member);
    if (!peer) return false;
    this.peers.delete(member);
    clearTimeout(peer.timer);
    if (peer.session) peer.session.close();
    return true;
  }

  _offerTo(peer) {
    const session = this._newSession(peer);
    session._offer(this.receiveMedia).catch((err) => session._fail(err));
  }

  _onOffer(member, offer) {
    let peer = this.peers.get(member);
    if (!peer) {
      // an offer before its join notice: the member joined after us
      peer = this._addPeer(member, "answer");
      this._emit("join", { member });
    }
    if (peer.role === "offer") {
      // it joined before us, so we offer to it: answering too would make two
      // connections for one pair (glare); the rule decides, not the timing
      this._warn(member, `ignoring an offer from ${member}: it joined before us, so we offer`);
      return;
    }
    clearTimeout(peer.timer);
    if (peer.session) peer.session.close(); // a member that offers again starts afresh
    const session = this._newSession(peer);
    session._answer(offer, this.early.take(member)).catch((err) => session._fail(err));
  }

  _onAnswer(member, answer) {
    const peer = this.peers.get(member);
    const session = peer?.session;
    if (!session || peer.role !== "offer" || session.remoteSet) {
      this._warn(member, `ignoring an answer from ${member}: no offer of ours is waiting for it`);
      return;
    }
    session._setRemote(answer).catch((err) => session._fail(err));
  }

  _newSession(peer) {
    const { member } = peer;
    const session = new PeerSession({
      signaling: this.signaling,
      localId: this.id,
      remoteId: member,
      iceServers: this.iceServers,
      localStream: this.localStream,
      timeoutMs: this.timeoutMs,
      channelLabel: CHAT_LABEL,
    });
    peer.session = session;
    peer.stream = null;
    const current = () => this.peers.get(member) === peer && peer.session === session;
    session.addEventListener("open", () => {
      if (current()) this._emit("connect", { member, session });
    });
    session.addEventListener("message", (e) => {
      const data = e.detail.data;
      const text = typeof data === "string" ? data : lenientDecoder.decode(data);
      if (current()) this._emit("message", { member, text });
    });
    session.addEventListener("track", (e) => {
      if (!current()) return;
      if (!peer.stream) peer.stream = new MediaStream();
      peer.stream.addTrack(e.detail.track);
      this._emit("track", { member, track: e.detail.track, stream: peer.stream });
    });
    session.addEventListener("warning", (e) => this._warn(member, e.detail));
    session.addEventListener("error", (e) => {
      if (current()) this._emit("error", { member, error: e.detail });
    });
    session.addEventListener("close", () => {
      // a member that left was removed first: only a connection that ended
      // while its member stays in the room is a "disconnect"
      if (!current() || this.closed || this.leaving) return;
      peer.session = null;
      peer.stream = null;
      this._emit("disconnect", { member });
    });
    // bounded: a connection not open within timeoutMs fails (and closes)
    session.opened().catch(() => {});
    return session;
  }
}
