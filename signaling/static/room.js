// The room page: /?room=R (app.js hands over to this module). An N-party
// call over a full mesh (rtc-signal.js's Room): a grid of tiles, one per
// member, with its name; mute, camera off and leave buttons; a group chat.
//
// URL parameters: room=R (required), id=NAME (default browser-<random>),
// video=1 (camera and microphone), server=ws://host:port, token=T (a room
// token: `rtc-signal token --id NAME --room R`), ice=URL[,URL] with
// iceUsername/iceCredential (ICE servers; none by default).
//
// Tests read window.rtcRoom: {log, errors, state, id, room (the Room)}.

import { Room, defaultServer, iceServersFromParams } from "/rtc-signal.js";

const params = new URLSearchParams(window.location.search);
const server = params.get("server") || defaultServer();
const roomName = params.get("room") || "";
const withVideo = params.get("video") === "1";
// what other members choose is shown, bounded: a member cannot flood the page
const MAX_SHOWN_TEXT = 2000;
const MAX_LOG = 1000;

const page = { log: [], errors: [], state: "idle", id: null, room: null };
window.rtcRoom = page;

function el(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(element.dataset, value);
    else if (key in element) element[key] = value;
    else element.setAttribute(key, value);
  }
  element.append(...children);
  return element;
}

// -- the page's layout (replaces the 1:1 page's) --------------------------------

const badge = el("span", { id: "room-state", className: "room-badge", dataset: { state: "idle" } }, "idle");
const tiles = el("div", { id: "tiles", role: "list" });
const muteButton = el("button", { type: "button", id: "mute", disabled: true }, "Mute");
const cameraButton = el("button", { type: "button", id: "camera", disabled: true }, "Camera off");
const leaveButton = el("button", { type: "button", id: "leave", className: "danger", disabled: true }, "Leave");
const logList = el("ol", { id: "room-log", "aria-live": "polite" });
const chatInput = el("input", {
  id: "chat-input",
  placeholder: "message to everyone",
  autocomplete: "off",
  maxLength: 4000,
  "aria-label": "message to everyone",
});
const chatForm = el("form", { id: "chat-form" }, chatInput, el("button", { type: "submit" }, "Send"));

document.title = `rtc-signal: room ${roomName}`;
document.head.append(el("link", { rel: "stylesheet", href: "/room.css" }));
document.body.replaceChildren(
  el(
    "header",
    { className: "room-header" },
    el("h1", {}, "rtc-signal"),
    el("span", { id: "room-title" }, `room ${roomName}`),
    el("span", { className: "muted" }, server),
    badge,
  ),
  el(
    "main",
    { id: "room" },
    el(
      "section",
      { id: "stage", "aria-label": "video call" },
      tiles,
      el("div", { id: "room-controls" }, muteButton, cameraButton, leaveButton),
    ),
    el("section", { id: "chat", "aria-label": "group chat" }, el("h2", {}, "Chat"), logList, chatForm),
  ),
);

function setState(state, text = state) {
  page.state = state;
  badge.dataset.state = state;
  badge.textContent = text;
}

function clip(text) {
  return text.length > MAX_SHOWN_TEXT ? text.slice(0, MAX_SHOWN_TEXT) + "…" : text;
}

/** kind: "chat" (from a member), "sent" (ours), "info", "error". */
function log(kind, member, text) {
  const entry = { time: Date.now(), kind, member, text };
  page.log.push(entry);
  if (page.log.length > MAX_LOG) page.log.shift();
  if (kind === "error") page.errors.push(text);
  const line = el("li", { className: kind });
  line.append(el("time", {}, new Date(entry.time).toLocaleTimeString()));
  if (member) line.append(el("b", {}, clip(member)), ": ");
  line.append(clip(text));
  logList.append(line);
  while (logList.childElementCount > MAX_LOG) logList.firstElementChild.remove();
  logList.scrollTop = logList.scrollHeight;
}

// -- tiles ---------------------------------------------------------------------

function tileOf(member) {
  return Array.from(tiles.children).find((t) => t.dataset.member === member) ?? null;
}

function addTile(member, { self = false } = {}) {
  let tile = tileOf(member);
  if (tile) return tile;
  const video = el("video", { autoplay: true, playsInline: true, muted: self, dataset: { member } });
  const status = el("span", { className: "status" }, self ? "" : "connecting…");
  tile = el(
    "figure",
    { className: "tile", role: "listitem", dataset: { member, state: self ? "self" : "connecting" } },
    el("div", { className: "avatar", "aria-hidden": "true" }, [...member][0]?.toUpperCase() ?? "?"),
    video,
    el("figcaption", {}, el("span", { className: "name" }, self ? `${member} (you)` : member), status),
  );
  tiles.append(tile);
  return tile;
}

function setTileState(member, state, text) {
  const tile = tileOf(member);
  if (!tile) return;
  tile.dataset.state = state;
  tile.querySelector(".status").textContent = text;
}

async function play(tile, stream) {
  const video = tile.querySelector("video");
  if (video.srcObject !== stream) video.srcObject = stream;
  tile.dataset.video = stream.getVideoTracks().length > 0 ? "on" : "off";
  try {
    await video.play();
  } catch (err) {
    if (err.name !== "NotAllowedError" || video.muted) return;
    // a browser that wants a click before playing sound: play muted, offer the click
    video.muted = true;
    video.play().catch(() => {});
    if (!tile.querySelector(".unmute")) {
      const unmute = el("button", { type: "button", className: "unmute" }, "click for sound");
      unmute.addEventListener("click", () => {
        video.muted = false;
        unmute.remove();
      });
      tile.append(unmute);
    }
  }
}

// -- the room --------------------------------------------------------------------

async function localMedia() {
  if (!withVideo) return null;
  try {
    // modest: in a mesh every member sends its camera to each other member
    return await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { max: 24 } },
      audio: true,
    });
  } catch (err) {
    log("error", "", `camera and microphone unavailable (${err.message}); joining without them`);
    return null;
  }
}

function toggle(button, kind, onLabel, offLabel, stream) {
  const tracks = stream.getTracks().filter((t) => t.kind === kind);
  const enable = !tracks[0].enabled;
  for (const track of tracks) track.enabled = enable;
  button.textContent = enable ? onLabel : offLabel;
  button.setAttribute("aria-pressed", String(!enable));
  return enable;
}

function wire(room, localStream) {
  room.addEventListener("join", (e) => {
    addTile(e.detail.member);
    log("info", "", `${e.detail.member} joined`);
  });
  room.addEventListener("connect", (e) => {
    setTileState(e.detail.member, "connected", "");
    log("info", "", `connected to ${e.detail.member}`);
  });
  room.addEventListener("track", (e) => {
    const tile = addTile(e.detail.member);
    play(tile, e.detail.stream);
  });
  room.addEventListener("message", (e) => log("chat", e.detail.member, e.detail.text));
  room.addEventListener("disconnect", (e) => {
    setTileState(e.detail.member, "disconnected", "connection lost");
    log("info", "", `connection to ${e.detail.member} lost`);
  });
  room.addEventListener("leave", (e) => {
    tileOf(e.detail.member)?.remove();
    log("info", "", `${e.detail.member} left`);
  });
  room.addEventListener("error", (e) => {
    log("error", e.detail.member, e.detail.error?.message || String(e.detail.error));
  });
  room.addEventListener("warning", (e) => console.warn(`rtc-signal room: ${e.detail.member}: ${e.detail.text}`));
  room.addEventListener("close", (e) => {
    for (const tile of Array.from(tiles.children)) if (tile.dataset.state !== "self") tile.remove();
    setState("left", e.detail.code === 1000 ? "left" : `disconnected (${e.detail.code})`);
    log("info", "", e.detail.code === 1000 ? "you left the room" : `signaling lost (${e.detail.code}); you are out of the room`);
    for (const track of localStream?.getTracks() ?? []) track.stop();
    for (const element of [muteButton, cameraButton, leaveButton, ...chatForm.elements]) element.disabled = true;
    leaveButton.replaceWith(el("a", { id: "rejoin", href: window.location.href, className: "button" }, "Rejoin"));
  });

  if (localStream) {
    muteButton.disabled = localStream.getAudioTracks().length === 0;
    cameraButton.disabled = localStream.getVideoTracks().length === 0;
    muteButton.addEventListener("click", () => {
      toggle(muteButton, "audio", "Mute", "Unmute", localStream);
    });
    cameraButton.addEventListener("click", () => {
      const on = toggle(cameraButton, "video", "Camera off", "Camera on", localStream);
      tileOf(room.id).dataset.video = on ? "on" : "off";
    });
  }
  leaveButton.disabled = false;
  leaveButton.addEventListener("click", () => {
    leaveButton.disabled = true;
    room.leave();
  });
  chatForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = chatInput.value;
    if (!text) return;
    const reached = room.send(text);
    log("sent", room.id, text);
    if (reached.length === 0) log("info", "", "nobody is connected yet: the message went to no one");
    chatInput.value = "";
  });
}

async function start() {
  const id = params.get("id") || undefined;
  setState("connecting", "joining…");
  const localStream = await localMedia();
  let room;
  try {
    room = await Room.join(server, roomName, {
      id,
      token: params.get("token"),
      iceServers: iceServersFromParams(params),
      localStream,
    });
  } catch (err) {
    for (const track of localStream?.getTracks() ?? []) track.stop();
    setState("error", "not joined");
    log("error", "", `cannot join room ${roomName}: ${err.message}`);
    return;
  }
  page.room = room;
  page.id = room.id;
  const self = addTile(room.id, { self: true });
  if (localStream) play(self, localStream);
  else self.dataset.video = "off";
  for (const member of room.members) addTile(member);
  wire(room, localStream);
  setState("joined", `joined as ${room.id}`);
  const others = room.members;
  log("info", "", others.length ? `joined; in the room: ${others.join(", ")}` : "joined; nobody else is here yet");
}

start();
