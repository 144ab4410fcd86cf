// The page served at / by `rtc-signal serve`: register as an answer peer or
// call one, see every message, type your own, send camera and microphone,
// mute, turn the camera off, hang up and call again.
//
// URL parameters (all optional): id=NAME (register as answer peer),
// target=NAME (call it; with id= as our own ID), interval=S (send
// browser-<n> every S seconds), count=N (stop the timer after N), video=1
// (camera and microphone), server=ws://host:port (another signaling server),
// token=T (auth token), ice=URL[,URL] with iceUsername/iceCredential (ICE
// servers; none by default: nothing public is contacted behind your back).
//
// Tests read window.rtcSignal: {log, sessions, signaling, errors, role,
// localStream, control}.

import { AnswerPeer, call, defaultServer } from "/rtc-signal.js";

const params = new URLSearchParams(window.location.search);
// ?room=R: the room page (room.js) replaces this one once this module has run
const inRoom = params.has("room");
if (inRoom) import("/room.js");
const $ = (id) => document.getElementById(id);

const page = {
  log: [], // {time, kind: "sent"|"recv"|"info"|"error", peer, text, reply?}
  sessions: new Map(), // remote id -> PeerSession
  signaling: "idle",
  errors: [],
  // "idle" | "registering" | "registered" | "dialing" | "calling"
  role: "idle",
  localStream: null,
};
window.rtcSignal = page;

const server = params.get("server") || defaultServer();
const token = params.get("token");
const iceServers = (params.get("ice") || "")
  .split(",")
  .filter(Boolean)
  .map((urls) =>
    urls.startsWith("turn")
      ? { urls, username: params.get("iceUsername") || "", credential: params.get("iceCredential") || "" }
      : { urls },
  );

let answerPeer = null; // the AnswerPeer while registered

// -- log -----------------------------------------------------------------------

function log(kind, peer, text, { reply = null, table = null } = {}) {
  const entry = { time: Date.now(), kind, peer, text };
  if (reply !== null) entry.reply = reply;
  page.log.push(entry);
  if (kind === "error") page.errors.push(text);
  const li = document.createElement("li");
  li.className = kind;
  const time = document.createElement("time");
  time.textContent = new Date(entry.time).toLocaleTimeString();
  li.append(time, peer ? `${peer}: ${text}` : text);
  if (table) li.append(table);
  $("log").append(li);
  $("log").scrollTop = $("log").scrollHeight;
}

function setSignaling(state, text = state) {
  page.signaling = state;
  const badge = $("signaling-state");
  badge.dataset.state = state;
  badge.textContent = `signaling: ${text}`;
}

// -- what can be done now --------------------------------------------------------

function openSessions() {
  return [...page.sessions.values()].filter((s) => s.channel && s.channel.readyState === "open");
}

function guidance() {
  const peers = [...page.sessions.keys()].join(", ");
  switch (page.role) {
    case "registering":
      return "Registering…";
    case "registered":
      return peers
        ? `In a call with ${peers}. Type below, or hang up (you stay registered).`
        : `Registered as ${answerPeer ? answerPeer.id : ""}: others can call this ID now. Unregister to call someone yourself.`;
    case "dialing":
      return "Calling…";
    case "calling":
      return peers ? `In a call with ${peers}. Type below, or hang up.` : "Call ended.";
    default:
      return "Register an ID to wait for calls, or type someone's ID and press Call.";
  }
}

/** Enable exactly the controls that can work now (called on every state change). */
function refresh() {
  const idle = page.role === "idle";
  const registered = page.role === "registered";
  const open = openSessions().length > 0;
  const stream = page.localStream;
  $("id").disabled = !idle;
  $("register").textContent = registered ? "Unregister" : "Register";
  $("register").disabled = !(registered || (idle && $("id").value.trim()));
  $("target").disabled = !idle;
  $("call").disabled = !(idle && $("target").value.trim());
  $("video").disabled = !idle;
  $("interval").disabled = !idle;
  $("hangup").disabled = page.sessions.size === 0;
  $("mute").disabled = !(stream && stream.getAudioTracks().length);
  $("camera").disabled = !(stream && stream.getVideoTracks().length);
  for (const button of document.querySelectorAll("#controls button")) button.disabled = !open;
  $("message").disabled = !open;
  $("send").disabled = !open;
  const text = guidance();
  if ($("guide").textContent !== text) $("guide").textContent = text;
  // a video element only where there is a stream to show
  $("local-box").hidden = !stream || stream.getVideoTracks().length === 0;
  $("media").hidden = $("local-box").hidden && $("remote-videos").childElementCount === 0;
}

// -- peers ---------------------------------------------------------------------

function renderPeers() {
  const list = $("peer-list");
  list.replaceChildren();
  for (const [id, session] of page.sessions) {
    const s = session.state;
    const li = document.createElement("li");
    li.dataset.peer = id;
    const setup = session.setupMs === null ? "" : ` (open in ${session.setupMs.toFixed(0)} ms)`;
    li.textContent = `${id}: connection ${s.connection}, ICE ${s.ice}, channel ${s.channel}${setup}`;
    list.append(li);
  }
  $("no-peers").hidden = page.sessions.size > 0;
  refresh();
}

let timer = null;
function startTimer() {
  const interval = Number($("interval").value);
  if (!(interval > 0) || timer) return;
  const count = Number(params.get("count")) || Infinity;
  const sent = new Map();
  timer = setInterval(() => {
    for (const [id, session] of page.sessions) {
      const n = (sent.get(id) || 0) + 1;
      if (n > count || !session.channel || session.channel.readyState !== "open") continue;
      sent.set(id, n);
      sendTo(session, `browser-${n}`);
    }
  }, interval * 1000);
}

function stopTimer() {
  clearInterval(timer);
  timer = null;
}

function sendTo(session, text) {
  try {
    session.send(text);
    log("sent", session.remoteId, text);
  } catch (err) {
    log("error", session.remoteId, err.message);
  }
}

function adopt(session) {
  const id = session.remoteId;
  page.sessions.set(id, session);
  renderPeers();
  session.addEventListener("state", renderPeers);
  session.addEventListener("open", () => {
    log("info", id, "data channel open");
    startTimer();
    refresh();
  });
  session.addEventListener("message", (e) => {
    const data = e.detail.data;
    log("recv", id, typeof data === "string" ? data : `<${data.length} bytes>`);
  });
  session.addEventListener("track", (e) => showRemoteTrack(id, e.detail));
  session.addEventListener("warning", (e) => log("info", id, e.detail));
  session.addEventListener("error", (e) => log("error", id, e.detail.message || String(e.detail)));
  session.addEventListener("close", () => {
    log("info", id, "call ended");
    if (page.sessions.get(id) === session) page.sessions.delete(id);
    $(`remote-${id}`)?.remove();
    if (page.role === "calling" && page.sessions.size === 0) backToIdle("idle");
    renderPeers();
  });
}

function showRemoteTrack(id, event) {
  let box = $(`remote-${id}`);
  if (!box) {
    box = document.createElement("div");
    box.id = `remote-${id}`;
    box.className = "video-box";
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // autoplay needs it; the controls unmute
    video.controls = true;
    video.dataset.peer = id;
    video.srcObject = new MediaStream();
    const label = document.createElement("span");
    label.className = "caption";
    label.textContent = id;
    box.append(video, label);
    $("remote-videos").append(box);
  }
  const video = box.querySelector("video");
  video.srcObject.addTrack(event.track);
  video.play().catch(() => {});
  log("info", id, `receiving ${event.track.kind}`);
  refresh();
}

// -- control commands (the "control" data channel; see the README) --------------

let nextCommandId = 1;
const waiting = new Map(); // command id -> {resolve, timer}

async function control(session, cmd) {
  const channel = await session.openChannel("control");
  if (!channel.rtcSignalListening) {
    channel.rtcSignalListening = true;
    channel.addEventListener("message", (e) => {
      let reply;
      try {
        reply = JSON.parse(e.data);
      } catch {
        log("error", session.remoteId, `control reply is not JSON: ${clip(String(e.data))}`);
        return;
      }
      const w = waiting.get(reply?.id);
      if (w) {
        clearTimeout(w.timer);
        waiting.delete(reply.id);
        w.resolve(reply);
      }
    });
  }
  const id = nextCommandId++;
  const request = { cmd, id };
  if (cmd === "ping") request.t = performance.now();
  const reply = await new Promise((resolve) => {
    const timer = setTimeout(() => {
      waiting.delete(id);
      resolve({ id, ok: false, error: "no reply within 5 s (is it a camera peer?)" });
    }, 5000);
    waiting.set(id, { resolve, timer });
    channel.send(JSON.stringify(request));
    log("sent", session.remoteId, `control: ${cmd}`);
  });
  const { kind, text, table } = describeReply(cmd, reply);
  log(kind, session.remoteId, text, { reply, table });
  return reply;
}
page.control = control;

/** A remote peer's string, bounded for the log. */
function clip(text, max = 80) {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function show(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return clip(JSON.stringify(value));
  return clip(String(value));
}

/** A control reply as a readable line (and a table for stats). */
function describeReply(cmd, reply) {
  if (!reply || reply.ok !== true) {
    return { kind: "error", text: `${cmd} failed: ${show(reply?.error ?? "malformed reply")}` };
  }
  const result = reply.result && typeof reply.result === "object" ? reply.result : {};
  switch (cmd) {
    case "ping":
      if (typeof result.t === "number") {
        return { kind: "recv", text: `pong: RTT ${(performance.now() - result.t).toFixed(1)} ms` };
      }
      break;
    case "stats":
      return { kind: "recv", text: "stats:", table: resultTable(result) };
    case "keyframe":
      return {
        kind: "recv",
        text: result.requested ? "keyframe requested" : `no keyframe: ${show(result.reason ?? "not possible")}`,
      };
    case "pause":
    case "resume":
      if (typeof result.paused === "boolean") {
        return { kind: "recv", text: result.paused ? "video paused" : "video resumed" };
      }
      break;
  }
  return { kind: "recv", text: `${cmd}: ${show(result)}` };
}

const COLUMN_NAMES = { viewer: "this viewer", total: "all viewers" };
const MAX_ROWS = 40;

/**
 * A result object as a table: nested objects side by side as columns (stats:
 * this viewer | all viewers), their keys as rows; other values as rows of
 * their own. Text only (textContent): a remote peer wrote these strings.
 */
function resultTable(result) {
  const columns = Object.entries(result).filter(
    ([, v]) => v === null || (typeof v === "object" && !Array.isArray(v)),
  );
  const plain = Object.entries(result).filter(([k]) => !columns.some(([c]) => c === k));
  const keys = [...new Set(columns.flatMap(([, v]) => Object.keys(v ?? {})))];
  const table = document.createElement("table");
  table.className = "result";
  const cell = (tag, text) => {
    const el = document.createElement(tag);
    el.textContent = text;
    return el;
  };
  if (columns.length) {
    const head = table.createTHead().insertRow();
    head.append(cell("th", ""), ...columns.map(([name]) => cell("th", COLUMN_NAMES[name] ?? clip(name, 24))));
  }
  const body = table.createTBody();
  for (const key of keys.slice(0, MAX_ROWS)) {
    const row = body.insertRow();
    row.append(cell("th", clip(key.replaceAll("_", " "), 32)), ...columns.map(([, v]) => cell("td", show(v?.[key]))));
  }
  for (const [key, value] of plain.slice(0, MAX_ROWS)) {
    const row = body.insertRow();
    const td = cell("td", show(value));
    td.colSpan = Math.max(1, columns.length);
    row.append(cell("th", clip(key.replaceAll("_", " "), 32)), td);
  }
  return table;
}

// -- local media ---------------------------------------------------------------

async function localMedia() {
  if (!$("video").checked) return null;
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  page.localStream = stream;
  $("local-video").srcObject = stream;
  setMuted(false);
  setCameraOff(false);
  return stream;
}

function stopLocalMedia() {
  for (const track of page.localStream?.getTracks() ?? []) track.stop();
  page.localStream = null;
  $("local-video").srcObject = null;
  setMuted(false);
  setCameraOff(false);
}

// A disabled track keeps its place in the call and sends silence or black
// frames: the remote side needs no renegotiation, and turning it back on is instant.
function setMuted(muted) {
  for (const track of page.localStream?.getAudioTracks() ?? []) track.enabled = !muted;
  $("mute").setAttribute("aria-pressed", String(muted));
}

function setCameraOff(off) {
  for (const track of page.localStream?.getVideoTracks() ?? []) track.enabled = !off;
  $("camera").setAttribute("aria-pressed", String(off));
  $("local-box").classList.toggle("off", off);
}

// -- actions -------------------------------------------------------------------

function setRole(role) {
  page.role = role;
  refresh();
}

/** End everything of the current role: calls, registration, camera. */
function backToIdle(signalingState) {
  stopTimer();
  stopLocalMedia();
  if (signalingState) setSignaling(signalingState);
  setRole("idle");
}

async function register(id) {
  setRole("registering");
  setSignaling("connecting");
  try {
    await localMedia();
    const peer = await AnswerPeer.register(server, id, { token, iceServers, localStream: page.localStream });
    answerPeer = peer;
    setSignaling("registered", `registered as ${id}`);
    log("info", "", `registered as ${id}; waiting for calls`);
    peer.addEventListener("call", (e) => {
      log("info", e.detail.remoteId, "incoming call");
      adopt(e.detail);
    });
    peer.addEventListener("warning", (e) => log("info", "", e.detail));
    peer.addEventListener("reconnecting", (e) => {
      const { attempt, delayMs, code } = e.detail;
      setSignaling("connecting", `reconnecting (${attempt})`);
      log("info", "", `signaling lost (${code}); reconnecting in ${(delayMs / 1000).toFixed(1)} s`);
    });
    peer.addEventListener("registered", () => {
      setSignaling("registered", `registered as ${id}`);
      log("info", "", `registered again as ${id}`);
    });
    peer.addEventListener("close", (e) => {
      if (answerPeer !== peer) return; // unregistered on purpose
      answerPeer = null;
      log("info", "", `signaling closed (${e.detail.code} ${e.detail.reason})`);
      backToIdle();
      setSignaling("closed", `closed (${e.detail.code})`);
    });
    setRole("registered");
  } catch (err) {
    backToIdle();
    setSignaling("error", "error");
    log("error", "", err.message);
  }
}

function unregister() {
  const peer = answerPeer;
  answerPeer = null;
  peer?.close();
  log("info", "", "unregistered");
  backToIdle("idle");
}

async function dial(target) {
  setRole("dialing");
  setSignaling("connecting");
  try {
    await localMedia();
    const options = { token, iceServers, localStream: page.localStream };
    if (params.get("id")) options.id = params.get("id");
    const session = await call(server, target, options);
    setSignaling("open", `calling ${target}`);
    log("info", target, `offer accepted as ${session.localId}`);
    setRole("calling");
    adopt(session);
    session.signaling.addEventListener("close", () => {
      if (page.role === "calling" && page.sessions.get(target) === session) setSignaling("closed", "closed");
    });
    await session.opened();
  } catch (err) {
    if (page.role === "dialing") backToIdle();
    setSignaling("error", "error");
    log("error", target, err.message);
  }
}

function hangUp() {
  // closing a session fires its "close" event, which does the rest
  for (const session of [...page.sessions.values()]) session.close();
}

// -- the one-to-one call page ------------------------------------------------------

function callMode() {
  $("answer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (page.role === "registered") unregister();
    else if (page.role === "idle") register($("id").value.trim());
  });
  $("offer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (page.role === "idle") dial($("target").value.trim());
  });
  $("id").addEventListener("input", refresh);
  $("target").addEventListener("input", refresh);
  $("send-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("message").value;
    if (!text) return;
    const sessions = openSessions();
    if (sessions.length === 0) log("error", "", "no peer to send to");
    for (const session of sessions) sendTo(session, text);
    $("message").value = "";
  });
  $("hangup").addEventListener("click", hangUp);
  $("mute").addEventListener("click", () => setMuted($("mute").getAttribute("aria-pressed") !== "true"));
  $("camera").addEventListener("click", () =>
    setCameraOff($("camera").getAttribute("aria-pressed") !== "true"),
  );
  for (const button of document.querySelectorAll("#controls button")) {
    button.addEventListener("click", () => {
      for (const session of openSessions()) {
        control(session, button.dataset.cmd).catch((err) => log("error", session.remoteId, err.message));
      }
    });
  }

  // scripting through the URL
  $("server").textContent = server;
  $("id").value = params.get("id") || "";
  $("target").value = params.get("target") || "";
  $("interval").value = params.get("interval") || "";
  $("video").checked = params.get("video") === "1";
  refresh();
  if (params.get("target")) {
    dial(params.get("target"));
  } else if (params.get("id")) {
    register(params.get("id"));
  }
}

/** Picks the page's mode from the URL: a room (room.js builds its own page
 * and joins, with id= as the member ID), or a call with one peer at a time. */
function main() {
  if (inRoom) return;
  callMode();
}

main();
