// The page served at / by `rtc-signal serve`: register as an answer peer or
// call one, see every message, type your own, send camera and microphone.
//
// URL parameters (all optional): id=NAME (register as answer peer),
// target=NAME (call it; with id= as our own ID), interval=S (send
// browser-<n> every S seconds), count=N (stop the timer after N), video=1
// (camera and microphone), server=ws://host:port (another signaling server),
// token=T (auth token), ice=URL[,URL] with iceUsername/iceCredential (ICE
// servers; none by default: nothing public is contacted behind your back).
//
// Tests read window.rtcSignal: {log, sessions, signaling, errors}.

import { AnswerPeer, call, defaultServer } from "/rtc-signal.js";

const params = new URLSearchParams(window.location.search);
// ?room=R: the room page (room.js) replaces this one once this module has run
const inRoom = params.has("room");
if (inRoom) import("/room.js");
const $ = (id) => document.getElementById(id);

const page = {
  log: [], // {time, kind: "sent"|"recv"|"info"|"error", peer, text}
  sessions: new Map(), // remote id -> PeerSession
  signaling: "idle",
  errors: [],
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

function log(kind, peer, text) {
  const entry = { time: Date.now(), kind, peer, text };
  page.log.push(entry);
  if (kind === "error") page.errors.push(text);
  const li = document.createElement("li");
  li.className = kind;
  const time = document.createElement("time");
  time.textContent = new Date(entry.time).toLocaleTimeString();
  li.append(time, peer ? `${peer}: ${text}` : text);
  $("log").append(li);
  $("log").scrollTop = $("log").scrollHeight;
}

function setSignaling(state, text = state) {
  page.signaling = state;
  const badge = $("signaling-state");
  badge.dataset.state = state;
  badge.textContent = `signaling: ${text}`;
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
    renderPeers();
  });
}

function showRemoteTrack(id, event) {
  $("media").hidden = false;
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
    label.textContent = id;
    box.append(video, label);
    $("remote-videos").append(box);
  }
  const video = box.querySelector("video");
  video.srcObject.addTrack(event.track);
  video.play().catch(() => {});
  log("info", id, `receiving ${event.track.kind}`);
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
        log("error", session.remoteId, `control reply is not JSON: ${e.data}`);
        return;
      }
      const w = waiting.get(reply.id);
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
      resolve({ id, ok: false, error: "no reply within 5 s" });
    }, 5000);
    waiting.set(id, { resolve, timer });
    channel.send(JSON.stringify(request));
    log("sent", session.remoteId, `control ${JSON.stringify(request)}`);
  });
  if (reply.ok && cmd === "ping" && typeof reply.result?.t === "number") {
    log("recv", session.remoteId, `pong: RTT ${(performance.now() - reply.result.t).toFixed(1)} ms`);
  } else {
    log(reply.ok ? "recv" : "error", session.remoteId, `control ${JSON.stringify(reply)}`);
  }
  return reply;
}
page.control = control;

// -- actions -------------------------------------------------------------------

async function localMedia() {
  if (!$("video").checked) return null;
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  $("media").hidden = false;
  $("local-video").srcObject = stream;
  return stream;
}

function lockForm() {
  for (const el of document.querySelectorAll("#connect input, #connect button")) el.disabled = true;
}

async function register(id) {
  lockForm();
  setSignaling("connecting");
  try {
    const localStream = await localMedia();
    const peer = await AnswerPeer.register(server, id, { token, iceServers, localStream });
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
      setSignaling("closed", `closed (${e.detail.code})`);
      log("info", "", `signaling closed (${e.detail.code} ${e.detail.reason})`);
    });
  } catch (err) {
    setSignaling("error", "error");
    log("error", "", err.message);
  }
}

async function dial(target) {
  lockForm();
  setSignaling("connecting");
  try {
    const localStream = await localMedia();
    const options = { token, iceServers, localStream };
    if (params.get("id")) options.id = params.get("id");
    const session = await call(server, target, options);
    setSignaling("open", `calling ${target}`);
    log("info", target, `offer accepted as ${session.localId}`);
    adopt(session);
    session.signaling.addEventListener("close", () => setSignaling("closed", "closed"));
    await session.opened();
  } catch (err) {
    setSignaling("error", "error");
    log("error", target, err.message);
  }
}

$("answer-form").addEventListener("submit", (e) => {
  e.preventDefault();
  register($("id").value.trim());
});
$("offer-form").addEventListener("submit", (e) => {
  e.preventDefault();
  dial($("target").value.trim());
});
$("send-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("message").value;
  if (!text) return;
  if (page.sessions.size === 0) log("error", "", "no peer to send to");
  for (const session of page.sessions.values()) sendTo(session, text);
  $("message").value = "";
});
for (const button of document.querySelectorAll("#controls button")) {
  button.addEventListener("click", () => {
    if (page.sessions.size === 0) log("error", "", "no peer to send control commands to");
    for (const session of page.sessions.values()) {
      control(session, button.dataset.cmd).catch((err) => log("error", session.remoteId, err.message));
    }
  });
}

// -- scripting through the URL -----------------------------------------------------

$("server").textContent = server;
$("id").value = params.get("id") || "";
$("target").value = params.get("target") || "";
$("interval").value = params.get("interval") || "";
$("video").checked = params.get("video") === "1";
if (inRoom) {
  // room.js joins the room (with id= as the member ID)
} else if (params.get("target")) {
  dial(params.get("target"));
} else if (params.get("id")) {
  register(params.get("id"));
}
