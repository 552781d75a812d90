/**
 * The browser chat app: conversation list, chat view, groups, media, notifications.
 *
 * Everything live goes through one ChatClient (chat-client.js, the protocol of
 * docs/protocol.md); reads and membership changes go through the REST API. The page is
 * rendered by templates/home.html; this module only fills it in (no inline script or
 * style: the Content-Security-Policy forbids both).
 */

import { del, get, patch, post, upload } from "./api.js";
import { ChatClient, STATES, randomId } from "./chat-client.js";
import {
  avatar,
  clock,
  colorClass,
  dayKey,
  dayLabel,
  duration,
  fileSize,
  fill,
  h,
  icon,
  lastSeenText,
  linkify,
  listTime,
  vh,
} from "./dom.js";
import { clearNotifications, enablePush, pushSupported, registerServiceWorker } from "./push.js";

const $ = (id) => document.getElementById(id);
const root = $("app");
const me = { id: Number(root.dataset.userId), username: root.dataset.username, name: root.dataset.name };
const client = new ChatClient({ userId: me.id });

const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"];
const EDIT_WINDOW_MS = 15 * 60 * 1000; // MESSAGE_EDIT_WINDOW_SECONDS' default; the server has the last word
const TYPING_RENEW_MS = 3000;
const TYPING_IDLE_MS = 4000;
const PAGE = 50;
const NEAR_BOTTOM_PX = 80;
const NEAR_TOP_PX = 160;
const TOUCH = window.matchMedia("(hover: none)");

const state = {
  convs: new Map(), // id -> conversation (list item fields + members + cursors)
  users: new Map([[me.id, { id: me.id, username: me.username, display_name: me.name }]]),
  presence: new Map(), // user id -> presence frame
  typing: new Map(), // conversation id -> Map(user id -> expiry timer)
  history: new Map(), // conversation id -> {oldest, hasMore, loading, loaded}
  drafts: new Map(), // conversation id -> text
  staged: new Map(), // conversation id -> [upload]
  fetching: new Map(), // conversation id -> Promise of its detail
  localPreviews: new Map(), // attachment id -> blob: URL of the file this browser uploaded
  open: null, // the open conversation's id
  reply: null, // the message being replied to
  editing: null, // the message being edited
  search: "",
};

// The open chat's rendered elements.
const view = {
  items: new Map(), // seq -> li
  pending: new Map(), // client_msg_id -> li
  days: new Map(), // day key -> {section, list, time}
  stick: true, // keep the newest message in view
  unseen: 0,
  firstUnread: null,
};

// --- people and conversations -------------------------------------------------------------

function remember(user) {
  if (user?.id != null) state.users.set(user.id, { ...state.users.get(user.id), ...user });
}

function displayName(user) {
  return user?.display_name || user?.username || "Someone";
}

function nameOf(userId, { you = "You" } = {}) {
  if (userId === me.id) return you;
  return displayName(state.users.get(userId));
}

function titleOf(conv) {
  if (conv.kind === "direct") return conv.peer ? displayName(state.users.get(conv.peer.id) ?? conv.peer) : conv.title || "Chat";
  return conv.title || "Group";
}

function avatarOf(conv, extra = "") {
  const seed = conv.kind === "direct" && conv.peer ? `u${conv.peer.id}` : `c${conv.id}`;
  const element = avatar(titleOf(conv), seed, extra);
  if (conv.kind === "group") element.classList.add("avatar--group");
  if (conv.kind === "direct" && conv.peer && state.presence.get(conv.peer.id)?.online) {
    element.append(h("span", { class: "online-dot" }));
  }
  return element;
}

function unreadOf(conv) {
  return Math.max(0, (conv.last_seq ?? 0) - Math.max(conv.read_seq ?? 0, conv.joined_seq ?? 0));
}

/** Merge what the server said about a conversation. `seed`: the data comes from a REST read,
 * so the client may start syncing this conversation from its version (not from a sync batch,
 * whose conversation version is the end of a sync that may still be paging). */
function upsertConv(item, { seed = true } = {}) {
  const conv = state.convs.get(item.id) ?? { id: item.id, cursors: new Map(), members: null, last_seq: 0, read_seq: 0 };
  for (const field of ["kind", "role", "joined_seq", "muted_until", "member_count"]) {
    if (item[field] !== undefined) conv[field] = item[field];
  }
  if (item.title || !conv.title) conv.title = item.title ?? conv.title ?? "";
  if (item.peer) {
    conv.peer = item.peer;
    remember(item.peer);
  }
  conv.last_seq = Math.max(conv.last_seq ?? 0, item.last_seq ?? 0);
  conv.read_seq = Math.max(conv.read_seq ?? 0, item.read_seq ?? 0);
  conv.delivered_seq = Math.max(conv.delivered_seq ?? 0, item.delivered_seq ?? 0);
  if (item.last_message) noteLastMessage(conv, item.last_message);
  if (item.last_message_at && !conv.last_message_at) conv.last_message_at = item.last_message_at;
  if (Array.isArray(item.members)) {
    conv.members = item.members.map((m) => ({ user_id: m.user.id, role: m.role }));
    conv.member_count = conv.members.length;
    for (const m of item.members) {
      remember(m.user);
      noteCursor(conv, m.user.id, m.delivered_seq, m.read_seq);
    }
  }
  state.convs.set(conv.id, conv);
  if (seed) client.seed(conv.id, { version: item.version, last_seq: item.last_seq });
  return conv;
}

function noteLastMessage(conv, message) {
  const last = conv.last_message;
  if (!last || message.seq > last.seq || (message.seq === last.seq && message.version >= last.version)) {
    conv.last_message = message;
    conv.last_message_at = message.created_at;
  }
}

function noteCursor(conv, userId, delivered, read) {
  const cursor = conv.cursors.get(userId) ?? { delivered: 0, read: 0 };
  cursor.delivered = Math.max(cursor.delivered, delivered ?? 0, read ?? 0);
  cursor.read = Math.max(cursor.read, read ?? 0);
  conv.cursors.set(userId, cursor);
}

/** The conversation, fetched over REST the first time we hear of it. */
function ensureConv(id) {
  const known = state.convs.get(id);
  if (known) return Promise.resolve(known);
  let pending = state.fetching.get(id);
  if (!pending) {
    pending = get(`/api/v1/conversations/${id}/`)
      .then((detail) => {
        const conv = upsertConv(detail);
        watchPeers();
        scheduleList();
        return conv;
      })
      .finally(() => state.fetching.delete(id));
    state.fetching.set(id, pending);
  }
  return pending;
}

async function refreshDetail(id) {
  try {
    const detail = await get(`/api/v1/conversations/${id}/`);
    upsertConv(detail);
    scheduleList();
    if (state.open === id) {
      renderHeader();
      refreshStatuses();
      rerenderSystemMessages();
    }
    if ($("info-dialog").open && state.open === id) renderInfo();
    return state.convs.get(id);
  } catch (error) {
    if (error.status === 404) dropConv(id, "You are no longer in that conversation.");
    return null;
  }
}

function dropConv(id, message) {
  state.convs.delete(id);
  state.history.delete(id);
  state.drafts.delete(id);
  state.typing.delete(id);
  client.forgetConversation(id);
  scheduleList();
  if (state.open === id) {
    if ($("info-dialog").open) $("info-dialog").close();
    location.hash = "#/";
    if (message) notify(message);
  }
}

function watchPeers() {
  const ids = [];
  for (const conv of state.convs.values()) if (conv.kind === "direct" && conv.peer) ids.push(conv.peer.id);
  client.watchPresence(ids);
}

/** A tombstone: deleted by its sender, or hidden by a moderator. */
const gone = (message) => Boolean(message.deleted || message.hidden);
const HIDDEN_TEXT = "This message was removed by a moderator";

/** What a message says in one line (list previews, reply quotes). */
function snippet(message) {
  if (!message) return "";
  if (message.hidden) return HIDDEN_TEXT;
  if (message.deleted) return "This message was deleted";
  if (message.kind === "system") return systemText(message);
  const files = visualFirst(message.attachments ?? []);
  if (files.length) {
    const kinds = { image: "📷 Photo", video: "🎬 Video", audio: "🎤 Audio" };
    const label = kinds[files[0].kind] ?? `📎 ${files[0].filename}`;
    return message.body ? `${label.split(" ")[0]} ${message.body}` : label;
  }
  return message.body.replace(/\s+/g, " ");
}

function systemText(message) {
  const meta = message.meta ?? {};
  const actor = nameOf(message.sender_id);
  const people = (meta.user_ids ?? []).map((id) => nameOf(id, { you: "you" })).join(", ");
  switch (meta.event) {
    case "group_created":
      return `${actor} created the group “${meta.title ?? ""}”`;
    case "members_added":
      return `${actor} added ${people}`;
    case "member_removed":
      return `${actor} removed ${people}`;
    case "member_left":
      return `${people.charAt(0).toUpperCase()}${people.slice(1)} left`;
    case "role_changed":
      return `${actor} made ${people} ${meta.role === "member" ? "a member" : `an ${meta.role}`}`;
    default:
      return message.body || "Something changed";
  }
}

// --- message status (ticks) ----------------------------------------------------------------

function othersCursors(conv) {
  const ids = conv.members
    ? conv.members.map((m) => m.user_id).filter((id) => id !== me.id)
    : [...conv.cursors.keys()].filter((id) => id !== me.id);
  return ids.map((id) => conv.cursors.get(id));
}

/** "sent" once acked; "delivered" when every other member's delivered cursor passed it; "read" likewise. */
function statusOf(conv, message) {
  const others = othersCursors(conv);
  if (!others.length || others.some((c) => !c)) return "sent";
  if (others.every((c) => c.read >= message.seq)) return "read";
  if (others.every((c) => c.delivered >= message.seq)) return "delivered";
  return "sent";
}

const STATUS_TEXT = { sent: "Sent", delivered: "Delivered", read: "Read", queued: "Waiting to send", failed: "Not sent" };

function statusMark(status) {
  const name = { sent: "tick", delivered: "ticks", read: "ticks", queued: "clock", failed: "alert" }[status];
  return h("span", { class: `status status--${status}` }, icon(name, "status-icon"), vh(STATUS_TEXT[status]));
}

// --- the conversation list -------------------------------------------------------------------

const rows = new Map(); // conversation id -> li
let listQueued = false;

function scheduleList() {
  if (listQueued) return;
  listQueued = true;
  queueMicrotask(() => {
    listQueued = false;
    renderList();
  });
}

function activityOf(conv) {
  const pending = client.pending(conv.id);
  const last = pending.length ? pending[pending.length - 1].created_at : conv.last_message_at;
  return last ? Date.parse(last) : 0;
}

function renderList() {
  const list = $("conv-list");
  const query = state.search.trim().toLowerCase();
  const convs = [...state.convs.values()]
    .filter((c) => !query || titleOf(c).toLowerCase().includes(query))
    .sort((a, b) => activityOf(b) - activityOf(a) || b.id - a.id);
  const focused = document.activeElement;
  const keep = new Set();
  convs.forEach((conv, index) => {
    let row = rows.get(conv.id);
    if (!row) {
      row = h("li", {}, h("a", { class: "conv", href: `#/c/${conv.id}` }));
      rows.set(conv.id, row);
    }
    keep.add(row);
    renderRow(conv, row.firstChild);
    if (list.children[index] !== row) list.insertBefore(row, list.children[index] ?? null);
  });
  for (const [id, row] of rows) {
    if (!keep.has(row)) {
      row.remove();
      if (!state.convs.has(id)) rows.delete(id);
    }
  }
  if (focused && focused !== document.activeElement && focused.isConnected) focused.focus();
  $("convs-empty").hidden = state.convs.size > 0 || Boolean(query);
  updateTitle();
}

function renderRow(conv, link) {
  const unread = unreadOf(conv);
  const open = state.open === conv.id;
  link.setAttribute("aria-current", open ? "page" : "false");
  link.classList.toggle("conv--open", open);
  link.classList.toggle("conv--unread", unread > 0);
  const pending = client.pending(conv.id);
  const typing = typingText(conv);
  let preview;
  let when = conv.last_message_at;
  if (typing) {
    preview = h("span", { class: "preview preview--typing" }, typing);
  } else if (pending.length) {
    const item = pending[pending.length - 1];
    when = item.created_at;
    preview = h(
      "span",
      { class: "preview" },
      statusMark(item.status === "failed" ? "failed" : "queued"),
      h("span", { class: "preview-text" }, item.body || snippet({ ...item, kind: "text", attachments: item.local?.attachments ?? [] })),
    );
  } else if (conv.last_message) {
    const m = conv.last_message;
    const mine = m.sender_id === me.id && m.kind !== "system";
    const who = !mine && conv.kind === "group" && m.kind !== "system" && !gone(m) ? `${nameOf(m.sender_id)}: ` : "";
    preview = h(
      "span",
      { class: "preview" },
      mine && !gone(m) ? statusMark(statusOf(conv, m)) : null,
      h(
        "span",
        { class: `preview-text${gone(m) ? " preview-text--deleted" : ""}` },
        who,
        m.deleted && m.sender_id === me.id ? "You deleted this message" : snippet(m),
      ),
    );
  } else {
    preview = h("span", { class: "preview preview--empty" }, conv.kind === "group" ? "No messages yet" : "Say hello 👋");
  }
  fill(
    link,
    avatarOf(conv),
    h(
      "span",
      { class: "conv-main" },
      h(
        "span",
        { class: "conv-top" },
        h("span", { class: "conv-name" }, titleOf(conv)),
        when ? h("time", { class: "conv-time", datetime: when }, listTime(new Date(when))) : null,
      ),
      h(
        "span",
        { class: "conv-bottom" },
        preview,
        conv.muted_until ? h("span", { class: "muted-mark", title: "Muted" }, "🔕") : null,
        unread > 0 ? h("span", { class: "badge" }, String(unread), vh(unread === 1 ? " unread message" : " unread messages")) : null,
      ),
    ),
  );
}

function updateTitle() {
  let total = 0;
  for (const conv of state.convs.values()) total += unreadOf(conv) > 0 ? 1 : 0;
  document.title = total ? `(${total}) Chat` : "Chat";
}

// --- people search (sidebar) ---------------------------------------------------------------

let searchTimer = null;
let searchSerial = 0;

function onSearchInput() {
  state.search = $("user-search").value;
  scheduleList();
  clearTimeout(searchTimer);
  const query = state.search.trim();
  if (!query) {
    $("people").hidden = true;
    fill($("people-list"));
    return;
  }
  searchTimer = setTimeout(() => searchPeople(query), 180);
}

async function searchPeople(query) {
  const serial = ++searchSerial;
  let users = [];
  try {
    users = await get(`/api/v1/users/?q=${encodeURIComponent(query)}`);
  } catch (error) {
    notify(`Search failed: ${error.message}`);
    return;
  }
  if (serial !== searchSerial) return;
  users.forEach(remember);
  $("people").hidden = false;
  $("people-empty").hidden = users.length > 0;
  fill(
    $("people-list"),
    users.map((user) =>
      h(
        "li",
        {},
        h(
          "button",
          { type: "button", class: "person", dataset: { userId: user.id } },
          avatar(displayName(user), `u${user.id}`),
          h("span", { class: "person-main" }, h("span", { class: "person-name" }, displayName(user)), h("span", { class: "person-handle" }, `@${user.username}`)),
        ),
      ),
    ),
  );
}

async function startDirect(userId) {
  try {
    const detail = await post("/api/v1/conversations/", { kind: "direct", user_id: userId });
    const conv = upsertConv(detail);
    watchPeers();
    $("user-search").value = "";
    onSearchInput();
    location.hash = `#/c/${conv.id}`;
  } catch (error) {
    notify(`Could not start the chat: ${error.message}`);
  }
}

// --- routing -----------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/c\/(\d+)$/);
  if (match) {
    const id = Number(match[1]);
    ensureConv(id)
      .then(() => openChat(id))
      .catch(() => {
        notify("That conversation does not exist, or you are not in it.");
        location.hash = "#/";
      });
  } else {
    closeChat();
  }
}

function closeChat() {
  leaveOpenChat();
  state.open = null;
  root.dataset.view = "list";
  $("chat-pane").hidden = true;
  $("chat-empty").hidden = false;
  scheduleList();
}

function leaveOpenChat() {
  if (state.open == null) return;
  stopTyping();
  closeMenu();
  state.drafts.set(state.open, state.editing ? "" : $("message").value);
  state.reply = state.editing = null;
}

// --- the chat view -------------------------------------------------------------------------------

function openChat(id) {
  const conv = state.convs.get(id);
  if (!conv) return;
  if (state.open !== id) {
    leaveOpenChat();
    state.open = id;
    resetView();
    $("message").value = state.drafts.get(id) ?? "";
    renderContext();
    renderTray();
    view.firstUnread = unreadOf(conv) > 0 ? Math.max(conv.read_seq ?? 0, conv.joined_seq ?? 0) : null;
  }
  root.dataset.view = "chat";
  $("chat-empty").hidden = true;
  $("chat-pane").hidden = false;
  renderHeader();
  scheduleList();
  const history = historyOf(id);
  if (history.loaded) {
    renderRange(history.oldest ?? 0, Infinity);
    renderPending();
    renderTop();
    scrollToStart();
  } else {
    renderTop();
    loadLatest(id);
  }
  updateQueueBar();
  refreshDetail(id);
  if (window.matchMedia("(min-width: 761px)").matches) $("message").focus({ preventScroll: true });
}

function historyOf(id) {
  let history = state.history.get(id);
  if (!history) {
    history = { oldest: null, hasMore: false, loading: false, loaded: false };
    state.history.set(id, history);
  }
  return history;
}

function resetView() {
  view.items.clear();
  view.pending.clear();
  view.days.clear();
  view.stick = true;
  view.unseen = 0;
  fill($("days"));
  updateJump();
}

async function loadLatest(id) {
  const history = historyOf(id);
  if (history.loading) return;
  history.loading = true;
  renderTop();
  try {
    const page = await get(`/api/v1/conversations/${id}/messages/?limit=${PAGE}`);
    client.ingest(page.messages);
    // An empty page: nothing visible existed yet, so everything that arrives belongs in view.
    history.oldest = page.messages.length ? page.messages[0].seq : 0;
    history.hasMore = page.has_more;
    history.loaded = true;
  } catch (error) {
    notify(`Could not load messages: ${error.message}`);
  } finally {
    history.loading = false;
  }
  if (state.open !== id) return;
  renderRange(history.oldest ?? 0, Infinity);
  renderPending();
  renderTop();
  scrollToStart();
}

async function loadOlder() {
  const id = state.open;
  const history = historyOf(id);
  if (id == null || !history.loaded || history.loading || !history.hasMore) return;
  history.loading = true;
  renderTop();
  try {
    const page = await get(`/api/v1/conversations/${id}/messages/?before_seq=${history.oldest}&limit=${PAGE}`);
    client.ingest(page.messages);
    if (state.open === id && page.messages.length) {
      const log = $("log");
      const height = log.scrollHeight;
      const top = log.scrollTop;
      renderRange(page.messages[0].seq, history.oldest - 1);
      log.scrollTop = top + (log.scrollHeight - height); // keep what the reader was looking at in place
    }
    if (page.messages.length) history.oldest = page.messages[0].seq;
    history.hasMore = page.has_more;
  } catch (error) {
    notify(`Could not load earlier messages: ${error.message}`);
  } finally {
    history.loading = false;
    if (state.open === id) renderTop();
  }
}

function renderTop() {
  const id = state.open;
  const conv = state.convs.get(id);
  const history = historyOf(id);
  const top = $("log-top");
  if (history.loading) {
    fill(top, h("p", { class: "log-note" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Loading messages…"));
  } else if (history.hasMore) {
    fill(top, h("button", { type: "button", class: "load-more", id: "load-more" }, "Load earlier messages"));
  } else if (history.loaded && conv) {
    const text =
      conv.kind === "direct"
        ? `This is the beginning of your chat with ${titleOf(conv)}.`
        : conv.joined_seq > 0
          ? "Messages from before you joined are not shown."
          : `This is the beginning of “${titleOf(conv)}”.`;
    fill(top, h("p", { class: "log-note log-note--start" }, text));
  } else {
    fill(top);
  }
}

function renderHeader() {
  const conv = state.convs.get(state.open);
  if (!conv) return;
  fill($("chat-avatar"), avatarOf(conv, "avatar--head"));
  $("chat-title").textContent = titleOf(conv);
  $("group-info").hidden = conv.kind !== "group";
  renderSubtitle();
}

function renderSubtitle() {
  const conv = state.convs.get(state.open);
  if (!conv) return;
  const sub = $("chat-sub");
  const typing = typingText(conv);
  sub.classList.toggle("chat-sub--typing", Boolean(typing));
  sub.classList.remove("chat-sub--online");
  if (typing) {
    sub.textContent = typing;
  } else if (client.state !== STATES.CONNECTED) {
    sub.textContent = client.state === STATES.OFFLINE ? "waiting for network…" : "connecting…";
  } else if (conv.kind === "direct") {
    const presence = conv.peer ? state.presence.get(conv.peer.id) : null;
    if (presence?.online) {
      sub.textContent = "online";
      sub.classList.add("chat-sub--online");
    } else {
      sub.textContent = presence?.last_seen ? lastSeenText(presence.last_seen) : "";
    }
  } else if (conv.members) {
    const names = conv.members.map((m) => nameOf(m.user_id)).sort((a, b) => (a === "You") - (b === "You") || a.localeCompare(b));
    sub.textContent = names.join(", ");
  } else {
    sub.textContent = `${conv.member_count ?? ""} members`;
  }
}

// --- rendering messages ------------------------------------------------------------------------

function dayGroup(date) {
  const key = dayKey(date);
  let group = view.days.get(key);
  if (group) return group;
  const time = new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
  const list = h("ol", { class: "msgs", role: "list" });
  const label = dayLabel(date);
  const section = h("section", { class: "day", "aria-label": label }, h("h3", { class: "day-sep" }, h("span", {}, label)), list);
  group = { section, list, time };
  view.days.set(key, group);
  const days = $("days");
  const after = [...view.days.values()].filter((g) => g.time > time && g.section.isConnected).sort((a, b) => a.time - b.time)[0];
  days.insertBefore(section, after ? after.section : null);
  return group;
}

function seqOf(li) {
  return li.dataset.seq ? Number(li.dataset.seq) : Infinity; // unsent messages come last
}

function place(li, date, seq) {
  const { list } = dayGroup(date);
  const next = [...list.children].find((other) => seqOf(other) > seq);
  list.insertBefore(li, next ?? null);
  restyleRuns(list);
}

/** Consecutive messages of one sender within a few minutes form a run: one tail, one name. */
function restyleRuns(list) {
  let previous = null;
  for (const li of list.children) {
    const same =
      previous &&
      previous.dataset.sender === li.dataset.sender &&
      !li.classList.contains("msg--system") &&
      !previous.classList.contains("msg--system") &&
      Math.abs(Number(li.dataset.time) - Number(previous.dataset.time)) < 5 * 60 * 1000;
    li.classList.toggle("msg--cont", Boolean(same));
    previous = li;
  }
}

function renderRange(fromSeq, toSeq) {
  for (const message of client.conversationMessages(state.open)) {
    if (message.seq >= fromSeq && message.seq <= toSeq) renderMessage(message);
  }
}

function renderMessage(message) {
  const conv = state.convs.get(message.conversation_id);
  if (!conv) return;
  const li = messageItem(conv, message);
  const existing = view.items.get(message.seq);
  if (existing) {
    const hadMenu = existing.contains(document.activeElement);
    existing.replaceWith(li);
    view.items.set(message.seq, li);
    restyleRuns(li.parentElement);
    if (hadMenu) li.querySelector(".msg-more")?.focus();
    return;
  }
  view.items.set(message.seq, li);
  place(li, new Date(message.created_at), message.seq);
}

function rerenderSystemMessages() {
  for (const message of client.conversationMessages(state.open)) {
    if (message.kind === "system" && view.items.has(message.seq)) renderMessage(message);
  }
}

function messageItem(conv, message) {
  const created = new Date(message.created_at);
  const base = { role: "listitem", dataset: { seq: message.seq, id: message.id, sender: message.sender_id ?? "", time: created.getTime() } };
  if (message.kind === "system") {
    return h("li", { ...base, class: "msg msg--system" }, h("span", { class: "system-pill" }, systemText(message)));
  }
  const mine = message.sender_id === me.id;
  const li = h("li", { ...base, class: `msg ${mine ? "msg--out" : "msg--in"}` });
  if (view.firstUnread != null && !mine && message.seq === firstUnreadSeq(conv)) li.classList.add("msg--first-unread");
  const bubble = h("div", { class: "bubble" });
  if (conv.kind === "group" && !mine) bubble.append(h("span", { class: `sender tx-${colorClass(`u${message.sender_id}`).slice(3)}` }, nameOf(message.sender_id)));
  const files = gone(message) ? [] : visualFirst(message.attachments ?? []);
  if (gone(message)) {
    const text = message.hidden ? HIDDEN_TEXT : mine ? "You deleted this message" : "This message was deleted";
    bubble.append(h("p", { class: "text text--deleted" }, icon("deleted", "icon icon--inline"), text, meta(conv, message, mine)));
  } else {
    if (message.reply_to) bubble.append(quoteOf(message.reply_to));
    if (files.length) bubble.append(h("div", { class: "atts" }, files.map((a) => attachmentView(a, mine))));
    if (message.body) bubble.append(h("p", { class: "text" }, h("span", { class: "body", dir: "auto" }, linkify(message.body)), meta(conv, message, mine)));
    else bubble.append(h("p", { class: "text text--bare" }, meta(conv, message, mine)));
  }
  if (onlyPictures(files) && !message.body) bubble.classList.add("bubble--media");
  li.append(bubble);
  if (!gone(message)) {
    bubble.append(
      h("button", { type: "button", class: "msg-more", "aria-label": "Message options", "aria-haspopup": "menu", "aria-expanded": "false" }, icon("more")),
    );
    if (message.reactions?.length) li.append(reactionChips(message));
  }
  return li;
}

const KIND_ORDER = { image: 0, video: 1, audio: 2, file: 3 };

/** Photos and videos first, then audio, then other files (as messengers show them). */
function visualFirst(attachments) {
  return [...attachments].sort((a, b) => (KIND_ORDER[a.kind] ?? 3) - (KIND_ORDER[b.kind] ?? 3));
}

/** Photos and videos alone get the time drawn over them; other files get a line of their own. */
function onlyPictures(files) {
  return files.length > 0 && files.every((a) => a.kind === "image" || a.kind === "video");
}

function firstUnreadSeq(conv) {
  for (const message of client.conversationMessages(conv.id)) {
    if (message.seq > view.firstUnread && message.sender_id !== me.id && message.kind !== "system") return message.seq;
  }
  return null;
}

function meta(conv, message, mine) {
  const created = new Date(message.created_at);
  return h(
    "span",
    { class: "meta" },
    " ", // apart from the text, for screen readers (not rendered: the meta is a flexbox)
    message.edited_at && !gone(message) ? h("span", { class: "edited" }, "edited") : null,
    h("time", { datetime: message.created_at, title: created.toLocaleString() }, clock(created)),
    mine && !gone(message) ? statusMark(statusOf(conv, message)) : null,
  );
}

function quoteOf(replyId) {
  const target = client.message(replyId);
  return h(
    "button",
    { type: "button", class: `quote ${target ? `quote--${colorClass(`u${target.sender_id}`).slice(3)}` : ""}`, dataset: { target: replyId } },
    h("span", { class: "quote-name" }, target ? nameOf(target.sender_id) : "Reply"),
    h("span", { class: "quote-text" }, target ? snippet(target) : "Earlier message"),
  );
}

function scaled(a, max = 320) {
  if (!a.width || !a.height) return {};
  const ratio = Math.min(1, max / Math.max(a.width, a.height));
  return { width: Math.round(a.width * ratio), height: Math.round(a.height * ratio) };
}

function attachmentView(a, mine) {
  const url = `/api/v1/media/${a.id}/download/`;
  const ready = a.status === "ready";
  const local = mine ? state.localPreviews.get(a.id) : null;
  const processing = (label) =>
    h("div", { class: "att-processing", role: "img", "aria-label": `${label}: ${a.filename}` }, h("span", { class: "spinner", "aria-hidden": "true" }), h("span", {}, label));
  if (a.kind === "image") {
    if (!ready && !local) return processing("Processing photo…");
    const src = ready ? (a.has_thumbnail ? `${url}?variant=thumbnail` : url) : local;
    return h(
      "a",
      { class: "att-image", href: url, dataset: { viewer: url, name: a.filename } },
      h("img", { src, alt: a.filename, ...scaled(a), decoding: "async" }),
    );
  }
  if (a.kind === "video") {
    if (!ready) return processing("Processing video…");
    return h("video", { class: "att-video", controls: true, preload: "metadata", src: url, poster: a.has_thumbnail ? `${url}?variant=thumbnail` : null, ...scaled(a), "aria-label": a.filename });
  }
  if (a.kind === "audio") {
    if (!ready) return processing("Processing audio…");
    return h(
      "div",
      { class: "att-audio" },
      h("audio", { controls: true, preload: "metadata", src: url, "aria-label": a.filename }),
      h("span", { class: "att-audio-name" }, a.filename, a.duration ? ` · ${duration(a.duration)}` : ""),
    );
  }
  const chip = [
    h("span", { class: "file-icon" }, icon("file")),
    h("span", { class: "file-main" }, h("span", { class: "file-name" }, a.filename), h("span", { class: "file-size" }, ready || mine ? fileSize(a.size) : "Processing…")),
  ];
  return ready || mine ? h("a", { class: "file-chip", href: url, download: a.filename }, chip) : h("span", { class: "file-chip" }, chip);
}

function reactionChips(message) {
  const groups = new Map();
  for (const r of message.reactions) {
    const group = groups.get(r.emoji) ?? { emoji: r.emoji, count: 0, mine: false };
    group.count += 1;
    group.mine ||= r.user_id === me.id;
    groups.set(r.emoji, group);
  }
  return h(
    "div",
    { class: "reactions" },
    [...groups.values()].map((g) =>
      h(
        "button",
        {
          type: "button",
          class: `reaction${g.mine ? " reaction--mine" : ""}`,
          "aria-pressed": String(g.mine),
          "aria-label": `${g.emoji} ${g.count}${g.mine ? ", yours" : ""}`,
          dataset: { emoji: g.emoji },
        },
        g.emoji,
        g.count > 1 ? h("span", { class: "reaction-count" }, String(g.count)) : null,
      ),
    ),
  );
}

function renderPending() {
  const id = state.open;
  if (id == null || !historyOf(id).loaded) return;
  const items = client.pending(id);
  const alive = new Set(items.map((i) => i.client_msg_id));
  for (const [key, li] of view.pending) {
    if (!alive.has(key)) {
      const list = li.parentElement;
      li.remove();
      view.pending.delete(key);
      if (list) restyleRuns(list);
    }
  }
  for (const item of items) {
    const li = pendingItem(item);
    const existing = view.pending.get(item.client_msg_id);
    if (existing) {
      existing.replaceWith(li);
    } else {
      place(li, new Date(item.created_at), Infinity);
    }
    view.pending.set(item.client_msg_id, li);
  }
}

function pendingItem(item) {
  const created = new Date(item.created_at);
  const status = item.status === "failed" ? "failed" : "queued";
  const files = visualFirst(item.local?.attachments ?? []);
  const metaEl = h("span", { class: "meta" }, " ", h("time", { datetime: item.created_at }, clock(created)), statusMark(status));
  const bubble = h(
    "div",
    { class: `bubble${onlyPictures(files) && !item.body ? " bubble--media" : ""}` },
    item.reply_to ? quoteOf(item.reply_to) : null,
    files.length ? h("div", { class: "atts" }, files.map((a) => attachmentView(a, true))) : null,
    h("p", { class: `text${item.body ? "" : " text--bare"}` }, item.body ? h("span", { class: "body", dir: "auto" }, linkify(item.body)) : null, metaEl),
  );
  const li = h(
    "li",
    { class: `msg msg--out msg--pending msg--${status}`, role: "listitem", dataset: { sender: me.id, time: created.getTime(), pending: item.client_msg_id } },
    bubble,
  );
  if (status === "failed") {
    li.append(
      h(
        "div",
        { class: "failed-bar" },
        h("span", {}, `Not sent: ${item.error}`),
        h("button", { type: "button", class: "link-btn", dataset: { retry: item.client_msg_id } }, "Retry"),
        h("button", { type: "button", class: "link-btn", dataset: { discard: item.client_msg_id } }, "Discard"),
      ),
    );
  }
  return li;
}

function refreshStatuses() {
  const conv = state.convs.get(state.open);
  if (!conv) return;
  for (const [seq, li] of view.items) {
    if (!li.classList.contains("msg--out")) continue;
    const status = li.querySelector(".status");
    if (!status) continue;
    const now = statusOf(conv, { seq });
    if (!status.classList.contains(`status--${now}`)) status.replaceWith(statusMark(now));
  }
}

// --- scrolling, reading ----------------------------------------------------------------------

function nearBottom() {
  const log = $("log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_BOTTOM_PX;
}

function scrollToBottom() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
  view.stick = true;
  view.unseen = 0;
  updateJump();
}

/** On opening a chat: show the first unread message, else the newest. */
function scrollToStart() {
  const first = $("days").querySelector(".msg--first-unread");
  if (first && first.offsetTop > $("log").clientHeight / 2) {
    $("log").scrollTop = first.offsetTop - 64;
    view.stick = nearBottom();
  } else {
    scrollToBottom();
  }
  markSeen();
}

function onLogScroll() {
  view.stick = nearBottom();
  if (view.stick) {
    view.unseen = 0;
    updateJump();
  }
  if ($("log").scrollTop < NEAR_TOP_PX) loadOlder();
  markSeen();
}

function updateJump() {
  const jump = $("jump");
  jump.hidden = view.stick;
  $("jump-count").hidden = view.unseen === 0;
  $("jump-count").textContent = view.unseen ? String(view.unseen) : "";
}

/** The newest message at least partly on screen. */
function lastVisibleSeq() {
  const log = $("log");
  const bottom = log.getBoundingClientRect().bottom;
  const seqs = [...view.items.keys()].sort((a, b) => b - a);
  for (const seq of seqs) {
    const rect = view.items.get(seq).getBoundingClientRect();
    if (rect.top < bottom - 8) return seq;
  }
  return 0;
}

/** Tell the server the user read what is on screen (only while this tab is visible). */
function markSeen() {
  const conv = state.convs.get(state.open);
  if (!conv || document.visibilityState !== "visible" || $("chat-pane").hidden) return;
  const seq = Math.min(lastVisibleSeq(), conv.last_seq);
  if (seq > (conv.read_seq ?? 0)) {
    conv.read_seq = seq;
    client.markRead(conv.id, seq);
    scheduleList();
    clearNotifications(conv.id);
  }
}

// --- live events --------------------------------------------------------------------------------

client.addEventListener("message", ({ detail: { message, source } }) => {
  const id = message.conversation_id;
  const fromOthers = message.sender_id !== me.id;
  if (fromOthers && source !== "history" && source !== "updated") client.markDelivered(id, message.seq);
  const conv = state.convs.get(id);
  if (!conv) {
    ensureConv(id).catch(() => {});
    return;
  }
  conv.last_seq = Math.max(conv.last_seq ?? 0, message.seq);
  noteLastMessage(conv, message);
  // Sending implies having read everything before: the server moves the sender's cursors
  // to the message's seq without a receipt.update (docs/protocol.md, receipt.update).
  if (message.sender_id != null) noteCursor(conv, message.sender_id, message.seq, message.seq);
  if (!fromOthers) {
    conv.read_seq = Math.max(conv.read_seq ?? 0, message.seq);
  } else if (source === "new") {
    clearTyping(id, message.sender_id);
  }
  if (message.kind === "system" && source !== "history") refreshDetail(id);
  scheduleList();
  if (state.open !== id) return;
  if (fromOthers && message.sender_id != null) refreshStatuses();
  const history = historyOf(id);
  if (!history.loaded || message.seq < (history.oldest ?? 0)) return;
  const isNew = !view.items.has(message.seq);
  const stick = view.stick || nearBottom();
  renderMessage(message);
  if (isNew && (stick || source === "ack")) {
    scrollToBottom();
  } else if (isNew && fromOthers && source !== "history") {
    view.unseen += 1;
    updateJump();
  }
  markSeen();
});

client.addEventListener("outbox", ({ detail: { conversationId } }) => {
  scheduleList();
  if (state.open != null && (conversationId == null || conversationId === state.open)) {
    const stick = view.stick || nearBottom();
    renderPending();
    if (stick) scrollToBottom();
  }
  updateQueueBar();
});

client.addEventListener("receipt", ({ detail }) => {
  const conv = state.convs.get(detail.conversation_id);
  if (!conv) return;
  noteCursor(conv, detail.user_id, detail.delivered_seq, detail.read_seq);
  if (detail.user_id === me.id) {
    conv.read_seq = Math.max(conv.read_seq ?? 0, detail.read_seq);
    conv.delivered_seq = Math.max(conv.delivered_seq ?? 0, detail.delivered_seq);
    if (conv.read_seq >= conv.last_seq) clearNotifications(conv.id); // read on another device
  }
  scheduleList();
  if (state.open === conv.id) refreshStatuses();
});

client.addEventListener("conversation", ({ detail: { conversation } }) => {
  if (!state.convs.has(conversation.id)) {
    ensureConv(conversation.id).catch(() => {});
    return;
  }
  upsertConv(conversation, { seed: false });
  scheduleList();
});

client.addEventListener("removed", ({ detail: { conversationId } }) => {
  dropConv(conversationId, "You are no longer in that conversation.");
});

client.addEventListener("typing", ({ detail }) => {
  if (detail.user_id === me.id) return;
  if (detail.state === "start") setTyping(detail.conversation_id, detail.user_id, detail.expires_in);
  else clearTyping(detail.conversation_id, detail.user_id);
});

client.addEventListener("presence", ({ detail }) => {
  state.presence.set(detail.user_id, detail);
  scheduleList();
  const conv = state.convs.get(state.open);
  if (conv?.kind === "direct" && conv.peer?.id === detail.user_id) renderHeader();
});

client.addEventListener("state", ({ detail: { state: connection } }) => {
  const labels = {
    [STATES.CONNECTING]: "Connecting…",
    [STATES.CONNECTED]: "Connected",
    [STATES.RECONNECTING]: "Reconnecting…",
    [STATES.OFFLINE]: "Offline",
  };
  $("conn").dataset.state = connection;
  $("conn-text").textContent = labels[connection];
  root.dataset.connection = connection;
  updateQueueBar();
  renderSubtitle();
  // A chat opened while the network was down: read its history now.
  if (connection === STATES.CONNECTED && state.open != null && !historyOf(state.open).loaded) loadLatest(state.open);
});

client.addEventListener("servererror", ({ detail }) => {
  if (detail.code === "rate_limited") notify("You are sending too fast. Slow down a little.");
  else notify(detail.detail || "Something went wrong.");
});

client.addEventListener("unauthorized", () => {
  location.assign("/login/");
});

function updateQueueBar() {
  const bar = $("queue-bar");
  if (state.open == null) {
    bar.hidden = true;
    return;
  }
  const waiting = client.pending(state.open).filter((i) => i.status !== "failed").length;
  const plural = waiting === 1 ? "1 message" : `${waiting} messages`;
  let text = "";
  if (client.state === STATES.OFFLINE) {
    text = waiting ? `You are offline. ${plural} will be sent when you are back online.` : "You are offline. New messages will be sent when you are back online.";
  } else if (client.state !== STATES.CONNECTED) {
    text = waiting ? `Reconnecting… ${plural} waiting to be sent.` : "Reconnecting…";
  }
  bar.hidden = !text;
  bar.textContent = text;
  bar.dataset.state = client.state;
}

// --- typing -------------------------------------------------------------------------------------

function setTyping(conversationId, userId, expiresIn) {
  let typists = state.typing.get(conversationId);
  if (!typists) {
    typists = new Map();
    state.typing.set(conversationId, typists);
  }
  clearTimeout(typists.get(userId));
  typists.set(userId, setTimeout(() => clearTyping(conversationId, userId), Math.max(1, expiresIn || 6) * 1000));
  typingChanged(conversationId);
}

function clearTyping(conversationId, userId) {
  const typists = state.typing.get(conversationId);
  if (!typists?.has(userId)) return;
  clearTimeout(typists.get(userId));
  typists.delete(userId);
  typingChanged(conversationId);
}

function typingChanged(conversationId) {
  scheduleList();
  if (state.open === conversationId) renderSubtitle();
}

function typingText(conv) {
  const typists = [...(state.typing.get(conv.id)?.keys() ?? [])];
  if (!typists.length) return "";
  const names = typists.map((id) => nameOf(id));
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names.length} people are typing…`;
}

let typingSentAt = 0;
let typingConv = null;
let typingIdle = null;

function onComposerInput() {
  if (state.open == null) return;
  if (!state.editing) state.drafts.set(state.open, $("message").value);
  if (state.editing || !$("message").value.trim()) {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (typingConv !== state.open || now - typingSentAt > TYPING_RENEW_MS) {
    client.typing(state.open, "start");
    typingConv = state.open;
    typingSentAt = now;
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(typingIdle);
  if (typingConv != null) client.typing(typingConv, "stop");
  typingConv = null;
  typingSentAt = 0;
}

// --- composing ----------------------------------------------------------------------------------

function renderContext() {
  const box = $("composer-context");
  const target = state.editing ?? state.reply;
  box.hidden = !target;
  if (!target) return;
  box.classList.toggle("composer-context--edit", Boolean(state.editing));
  $("context-title").textContent = state.editing ? "Edit message" : `Replying to ${nameOf(target.sender_id)}`;
  $("context-text").textContent = snippet(target);
  $("context-cancel").setAttribute("aria-label", state.editing ? "Cancel editing" : "Cancel reply");
}

function startReply(message) {
  state.editing = null;
  state.reply = message;
  renderContext();
  $("message").focus();
}

function startEdit(message) {
  state.reply = null;
  state.editing = message;
  $("message").value = message.body;
  renderContext();
  $("message").focus();
  stopTyping();
}

function cancelContext() {
  if (state.editing) $("message").value = state.drafts.get(state.open) ?? "";
  state.reply = state.editing = null;
  renderContext();
}

async function submitComposer() {
  const id = state.open;
  if (id == null) return;
  const textarea = $("message");
  const body = textarea.value.replace(/^\s*\n/, "").trimEnd();
  if (state.editing) {
    const message = state.editing;
    if (!body.trim() || body === message.body) {
      cancelContext();
      return;
    }
    try {
      await client.edit(id, message.id, body);
      state.editing = null;
      textarea.value = state.drafts.get(id) ?? "";
      renderContext();
    } catch (error) {
      notify(`Could not edit: ${error.message}`);
    }
    return;
  }
  const staged = state.staged.get(id) ?? [];
  if (!body.trim() && !staged.length) return;
  if (staged.some((u) => u.status === "failed") && !staged.some((u) => u.status !== "failed") && !body.trim()) return;
  textarea.value = "";
  state.drafts.delete(id);
  stopTyping();
  const replyTo = state.reply?.id ?? null;
  state.reply = null;
  renderContext();
  state.staged.delete(id);
  const sending = staged.filter((u) => u.status !== "failed");
  if (sending.length) {
    for (const u of sending) u.sending = true;
    state.staged.set(id, sending);
    renderTray();
    await Promise.allSettled(sending.map((u) => u.promise));
    const still = (state.staged.get(id) ?? []).filter((u) => !sending.includes(u));
    if (still.length) state.staged.set(id, still);
    else state.staged.delete(id);
    renderTray();
  }
  const attachments = sending.filter((u) => u.status === "done").map((u) => u.attachment);
  if (!body.trim() && !attachments.length) return;
  client.send(id, { body: body.trim() ? body : "", replyTo, attachmentIds: attachments.map((a) => a.id), local: attachments.length ? { attachments } : null });
}

function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submitComposer();
  } else if (event.key === "Escape" && (state.reply || state.editing)) {
    event.preventDefault();
    cancelContext();
  } else if (event.key === "ArrowUp" && !$("message").value && !state.editing) {
    const mine = client
      .conversationMessages(state.open)
      .filter((m) => m.sender_id === me.id && m.kind === "text" && !gone(m) && m.body)
      .pop();
    if (mine && Date.now() - Date.parse(mine.created_at) < EDIT_WINDOW_MS) {
      event.preventDefault();
      startEdit(mine);
    }
  }
}

// --- attachments ----------------------------------------------------------------------------------

function stageFiles(files) {
  const id = state.open;
  if (id == null || !files.length) return;
  const staged = state.staged.get(id) ?? [];
  for (const file of files) {
    const item = { key: randomId(), file, progress: 0, status: "uploading", attachment: null, error: null };
    const { promise, abort } = upload(file, {
      onProgress: (fraction) => {
        item.progress = fraction;
        updateTrayItem(item);
      },
    });
    item.abort = abort;
    item.promise = promise.then(
      (attachment) => {
        item.status = "done";
        item.attachment = attachment;
        if (attachment.kind === "image" && file.type.startsWith("image/")) state.localPreviews.set(attachment.id, URL.createObjectURL(file));
        updateTrayItem(item);
      },
      (error) => {
        item.status = "failed";
        item.error = error.message;
        updateTrayItem(item);
      },
    );
    staged.push(item);
  }
  state.staged.set(id, staged);
  renderTray();
  $("message").focus();
}

const trayItems = new Map(); // key -> li

function renderTray() {
  const tray = $("tray");
  const staged = state.staged.get(state.open) ?? [];
  trayItems.clear();
  fill(
    tray,
    staged.map((item) => {
      const li = h("li", { class: "tray-item" });
      trayItems.set(item.key, li);
      fillTrayItem(item, li);
      return li;
    }),
  );
  tray.hidden = staged.length === 0;
}

function updateTrayItem(item) {
  const li = trayItems.get(item.key);
  if (li) fillTrayItem(item, li);
}

function fillTrayItem(item, li) {
  li.dataset.status = item.status;
  const label =
    item.status === "failed"
      ? `Upload failed: ${item.error}`
      : item.status === "done"
        ? item.sending
          ? "Sending…"
          : "Ready to send"
        : `Uploading… ${Math.round(item.progress * 100)}%`;
  fill(
    li,
    h("span", { class: "file-icon" }, icon(item.file.type.startsWith("image/") ? "photo" : "file")),
    h(
      "span",
      { class: "tray-main" },
      h("span", { class: "tray-name" }, item.file.name, h("span", { class: "tray-size" }, ` · ${fileSize(item.file.size)}`)),
      item.status === "uploading" ? h("progress", { max: "1", value: String(item.progress), "aria-label": `Uploading ${item.file.name}` }) : null,
      h("span", { class: `tray-state${item.status === "failed" ? " tray-state--error" : ""}` }, label),
    ),
    item.sending ? null : h("button", { type: "button", class: "icon-btn icon-btn--small", dataset: { unstage: item.key }, "aria-label": `Remove ${item.file.name}` }, "×"),
  );
}

function unstage(key) {
  const staged = state.staged.get(state.open) ?? [];
  const item = staged.find((u) => u.key === key);
  if (!item) return;
  if (item.status === "uploading") item.abort();
  state.staged.set(
    state.open,
    staged.filter((u) => u !== item),
  );
  renderTray();
}

// --- message menu and actions ----------------------------------------------------------------------

let openMenu = null;

function closeMenu({ focusButton = false } = {}) {
  if (!openMenu) return;
  const { menu, button } = openMenu;
  menu.remove();
  button.setAttribute("aria-expanded", "false");
  button.closest(".msg")?.classList.remove("msg--menu");
  openMenu = null;
  if (focusButton) button.focus();
}

function showMenu(button) {
  const li = button.closest(".msg");
  const message = client.message(Number(li.dataset.id));
  if (!message) return;
  if (openMenu?.button === button) {
    closeMenu();
    return;
  }
  closeMenu();
  const mine = message.sender_id === me.id;
  const canEdit = mine && message.kind === "text" && message.body && Date.now() - Date.parse(message.created_at) < EDIT_WINDOW_MS;
  const item = (action, iconName, label) => h("button", { type: "button", role: "menuitem", class: "menu-item", dataset: { action } }, icon(iconName), label);
  const menu = h(
    "div",
    { class: "menu", role: "menu", "aria-label": "Message options" },
    h(
      "div",
      { class: "menu-reactions", role: "group", "aria-label": "Reactions" },
      REACTIONS.map((emoji) => h("button", { type: "button", role: "menuitem", class: "menu-emoji", dataset: { react: emoji }, "aria-label": `React with ${emoji}` }, emoji)),
    ),
    item("reply", "reply", "Reply"),
    canEdit ? item("edit", "edit", "Edit") : null,
    mine ? item("delete", "trash", "Delete for everyone") : null,
  );
  const log = $("log").getBoundingClientRect();
  const below = log.bottom - button.getBoundingClientRect().bottom;
  if (below < 300 && below < button.getBoundingClientRect().top - log.top) menu.classList.add("menu--up");
  li.querySelector(".bubble").append(menu);
  li.classList.add("msg--menu");
  button.setAttribute("aria-expanded", "true");
  openMenu = { menu, button, message };
  menu.querySelector("[role=menuitem]").focus();
}

function onMenuKey(event) {
  if (!openMenu || !openMenu.menu.contains(event.target)) return;
  const items = [...openMenu.menu.querySelectorAll("[role=menuitem]")];
  const index = items.indexOf(document.activeElement);
  if (event.key === "Escape") {
    event.preventDefault();
    closeMenu({ focusButton: true });
  } else if (event.key === "ArrowDown" || event.key === "ArrowRight") {
    event.preventDefault();
    items[(index + 1) % items.length].focus();
  } else if (event.key === "ArrowUp" || event.key === "ArrowLeft") {
    event.preventDefault();
    items[(index - 1 + items.length) % items.length].focus();
  } else if (event.key === "Tab") {
    closeMenu();
  }
}

async function react(message, emoji) {
  try {
    await client.react(message.conversation_id, message.id, emoji);
  } catch (error) {
    notify(`Could not react: ${error.message}`);
  }
}

async function deleteMessage(message) {
  const ok = await confirmDialog("Delete message?", "It will be replaced by “This message was deleted” for everyone.", "Delete for everyone");
  if (!ok) return;
  try {
    await client.delete(message.conversation_id, message.id);
  } catch (error) {
    notify(`Could not delete: ${error.message}`);
  }
}

function onLogClick(event) {
  const target = event.target.closest("button, a, audio, video");
  if (!target) {
    if (openMenu && !openMenu.menu.contains(event.target)) {
      closeMenu();
      return;
    }
    // On touch screens a tap on a bubble opens its options (there is no hover to show them).
    const more = event.target.closest(".bubble")?.querySelector(".msg-more");
    if (more && TOUCH.matches && !window.getSelection()?.toString()) showMenu(more);
    return;
  }
  if (target.classList.contains("msg-more")) {
    showMenu(target);
    return;
  }
  if (openMenu?.menu.contains(target)) {
    const { message } = openMenu;
    closeMenu();
    if (target.dataset.react) {
      const already = message.reactions.some((r) => r.user_id === me.id && r.emoji === target.dataset.react);
      react(message, already ? "" : target.dataset.react);
    } else if (target.dataset.action === "reply") startReply(message);
    else if (target.dataset.action === "edit") startEdit(message);
    else if (target.dataset.action === "delete") deleteMessage(message);
    return;
  }
  closeMenu();
  if (target.classList.contains("reaction")) {
    const message = client.message(Number(target.closest(".msg").dataset.id));
    if (message) react(message, target.getAttribute("aria-pressed") === "true" ? "" : target.dataset.emoji);
  } else if (target.classList.contains("quote")) {
    const original = client.message(Number(target.dataset.target));
    const li = original ? view.items.get(original.seq) : null;
    if (li) {
      li.scrollIntoView({ block: "center", behavior: "smooth" });
      li.classList.remove("msg--flash");
      void li.offsetWidth; // restart the highlight animation
      li.classList.add("msg--flash");
    }
  } else if (target.dataset.viewer) {
    event.preventDefault();
    openViewer(target.dataset.viewer, target.dataset.name);
  } else if (target.dataset.retry) {
    client.retry(target.dataset.retry);
  } else if (target.dataset.discard) {
    client.discard(target.dataset.discard);
  } else if (target.id === "load-more") {
    loadOlder();
  }
}

function openViewer(url, name) {
  $("viewer-img").src = url;
  $("viewer-img").alt = name;
  $("viewer-name").textContent = name;
  $("viewer-download").href = url;
  $("viewer-download").setAttribute("download", name);
  $("viewer").showModal();
}

// --- dialogs: confirm, new group, group info ------------------------------------------------------

function confirmDialog(title, text, action) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

/** A people picker: a search box and a result list of "Add" buttons. */
function picker({ input, results, exclude, onPick }) {
  let timer = null;
  let serial = 0;
  const run = async () => {
    const query = input.value.trim();
    const mine = ++serial;
    if (!query) {
      fill(results);
      return;
    }
    let users = [];
    try {
      users = await get(`/api/v1/users/?q=${encodeURIComponent(query)}`);
    } catch {
      users = [];
    }
    if (mine !== serial) return;
    users.forEach(remember);
    const shown = users.filter((u) => !exclude().has(u.id));
    fill(
      results,
      shown.length
        ? shown.map((user) =>
            h(
              "li",
              {},
              h(
                "button",
                { type: "button", class: "person person--pick", "aria-label": `Add ${displayName(user)}`, onclick: () => onPick(user) },
                avatar(displayName(user), `u${user.id}`),
                h("span", { class: "person-main" }, h("span", { class: "person-name" }, displayName(user)), h("span", { class: "person-handle" }, `@${user.username}`)),
                h("span", { class: "pick-add", "aria-hidden": "true" }, "+"),
              ),
            ),
          )
        : h("li", { class: "list-empty" }, "Nobody found."),
    );
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(run, 180);
  });
  return { refresh: run };
}

const newGroup = { picked: new Map() };

function openNewGroup() {
  newGroup.picked.clear();
  $("group-title").value = "";
  $("group-people").value = "";
  fill($("group-results"));
  $("new-group-error").hidden = true;
  renderPicked();
  $("new-group-dialog").showModal();
  $("group-title").focus();
}

function renderPicked() {
  fill(
    $("group-picked"),
    [...newGroup.picked.values()].map((user) =>
      h(
        "li",
        { class: "chip" },
        avatar(displayName(user), `u${user.id}`, "avatar--tiny"),
        displayName(user),
        h(
          "button",
          {
            type: "button",
            class: "chip-remove",
            "aria-label": `Remove ${displayName(user)}`,
            onclick: () => {
              newGroup.picked.delete(user.id);
              renderPicked();
              groupPicker.refresh();
            },
          },
          "×",
        ),
      ),
    ),
  );
}

let groupPicker = null;

async function createGroup(event) {
  event.preventDefault();
  const title = $("group-title").value.trim();
  const error = $("new-group-error");
  if (!title) {
    error.textContent = "Give the group a name.";
    error.hidden = false;
    $("group-title").focus();
    return;
  }
  try {
    const detail = await post("/api/v1/conversations/", { kind: "group", title, member_ids: [...newGroup.picked.keys()] });
    const conv = upsertConv(detail);
    $("new-group-dialog").close();
    scheduleList();
    location.hash = `#/c/${conv.id}`;
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
  }
}

const ROLE_LABEL = { owner: "Owner", admin: "Admin", member: "" };

function openInfo() {
  const conv = state.convs.get(state.open);
  if (!conv || conv.kind !== "group") return;
  $("info-people").value = "";
  fill($("info-results"));
  $("info-error").hidden = true;
  renderInfo();
  $("info-dialog").showModal();
  refreshDetail(conv.id);
}

function renderInfo() {
  const conv = state.convs.get(state.open);
  if (!conv) return;
  const myRole = conv.members?.find((m) => m.user_id === me.id)?.role ?? conv.role;
  const admin = myRole === "owner" || myRole === "admin";
  $("info-title").textContent = titleOf(conv);
  $("info-sub").textContent = `Group · ${conv.members?.length ?? conv.member_count ?? 0} members`;
  $("info-add").hidden = !admin;
  const members = [...(conv.members ?? [])].sort(
    (a, b) => (b.user_id === me.id) - (a.user_id === me.id) || nameOf(a.user_id).localeCompare(nameOf(b.user_id)),
  );
  fill(
    $("info-members"),
    members.map((m) => {
      const name = nameOf(m.user_id);
      const actions = [];
      if (admin && m.user_id !== me.id) {
        if (m.role === "member") actions.push(h("button", { type: "button", class: "link-btn", "aria-label": `Make ${name} admin`, onclick: () => setRole(conv, m.user_id, "admin") }, "Make admin"));
        if (m.role === "admin" && myRole === "owner") actions.push(h("button", { type: "button", class: "link-btn", "aria-label": `Dismiss ${name} as admin`, onclick: () => setRole(conv, m.user_id, "member") }, "Dismiss as admin"));
        if (m.role !== "owner" || myRole === "owner") actions.push(h("button", { type: "button", class: "link-btn link-btn--danger", "aria-label": `Remove ${name}`, onclick: () => removeMember(conv, m.user_id) }, "Remove"));
      }
      const user = state.users.get(m.user_id);
      return h(
        "li",
        { class: "member" },
        avatar(displayName(user), `u${m.user_id}`),
        h("span", { class: "person-main" }, h("span", { class: "person-name" }, m.user_id === me.id ? `${displayName(user)} (you)` : name), h("span", { class: "person-handle" }, `@${user?.username ?? ""}`)),
        ROLE_LABEL[m.role] ? h("span", { class: "role" }, ROLE_LABEL[m.role]) : null,
        actions.length ? h("span", { class: "member-actions" }, actions) : null,
      );
    }),
  );
}

async function memberChange(conv, call) {
  $("info-error").hidden = true;
  try {
    await call();
    await refreshDetail(conv.id);
  } catch (error) {
    $("info-error").textContent = error.message;
    $("info-error").hidden = false;
  }
}

const setRole = (conv, userId, role) => memberChange(conv, () => patch(`/api/v1/conversations/${conv.id}/members/${userId}/`, { role }));
const removeMember = (conv, userId) => memberChange(conv, () => del(`/api/v1/conversations/${conv.id}/members/${userId}/`));

async function addMember(user) {
  const conv = state.convs.get(state.open);
  if (!conv) return;
  $("info-people").value = "";
  fill($("info-results"));
  await memberChange(conv, () => post(`/api/v1/conversations/${conv.id}/members/`, { user_ids: [user.id] }));
}

async function leaveGroup() {
  const conv = state.convs.get(state.open);
  if (!conv) return;
  $("info-dialog").close();
  const ok = await confirmDialog(`Leave “${titleOf(conv)}”?`, "You will stop receiving its messages.", "Leave group");
  if (!ok) return;
  try {
    await del(`/api/v1/conversations/${conv.id}/members/${me.id}/`);
    dropConv(conv.id, null);
    location.hash = "#/";
  } catch (error) {
    notify(`Could not leave: ${error.message}`);
  }
}

// --- notices and notifications -------------------------------------------------------------------

let noticeTimer = null;

/** A message in the sidebar: an alert for failures, a status otherwise. */
function notify(text, { kind = "alert", sticky = kind === "alert" } = {}) {
  const notice = $("notice");
  notice.dataset.kind = kind;
  fill($("notice-text"), h("span", { role: kind === "alert" ? "alert" : "status" }, text));
  notice.hidden = false;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(() => (notice.hidden = true), 5000);
}

async function turnOnNotifications() {
  const button = $("notify");
  button.disabled = true;
  try {
    await enablePush();
    button.classList.add("icon-btn--on");
    notify("Notifications are on for this browser.", { kind: "ok" });
  } catch (error) {
    notify(`Notifications could not be turned on: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

// --- wiring --------------------------------------------------------------------------------------

function bindUI() {
  $("user-search").addEventListener("input", onSearchInput);
  $("user-search").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      $("user-search").value = "";
      onSearchInput();
    }
  });
  $("people-list").addEventListener("click", (event) => {
    const button = event.target.closest(".person");
    if (button) startDirect(Number(button.dataset.userId));
  });

  const log = $("log");
  log.addEventListener("scroll", onLogScroll, { passive: true });
  log.addEventListener("click", onLogClick);
  log.addEventListener("keydown", onMenuKey);
  // Keep the newest message in view while pictures load, the composer grows or the tray opens.
  const stickToBottom = new ResizeObserver(() => {
    if (view.stick && state.open != null) log.scrollTop = log.scrollHeight;
  });
  stickToBottom.observe($("days"));
  stickToBottom.observe(log);
  $("jump").addEventListener("click", () => {
    scrollToBottom();
    markSeen();
  });
  document.addEventListener("click", (event) => {
    if (openMenu && !log.contains(event.target)) closeMenu(); // the log handles its own clicks
  });

  const composer = $("composer");
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submitComposer();
  });
  $("message").addEventListener("keydown", onComposerKey);
  $("message").addEventListener("input", onComposerInput);
  $("message").addEventListener("blur", stopTyping);
  $("context-cancel").addEventListener("click", () => {
    cancelContext();
    $("message").focus();
  });
  $("attach").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", () => {
    stageFiles([...$("file-input").files]);
    $("file-input").value = "";
  });
  $("tray").addEventListener("click", (event) => {
    const button = event.target.closest("[data-unstage]");
    if (button) unstage(button.dataset.unstage);
  });
  $("message").addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if (files.length) {
      event.preventDefault();
      stageFiles(files);
    }
  });

  // Drag and drop anywhere on the open chat.
  const pane = $("chat-pane");
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes("Files");
  pane.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    $("drop-zone").hidden = false;
  });
  pane.addEventListener("dragover", (event) => {
    if (hasFiles(event)) event.preventDefault();
  });
  pane.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) $("drop-zone").hidden = true;
  });
  pane.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    $("drop-zone").hidden = true;
    stageFiles([...event.dataTransfer.files]);
  });

  $("group-info").addEventListener("click", openInfo);
  $("info-close").addEventListener("click", () => $("info-dialog").close());
  $("info-leave").addEventListener("click", leaveGroup);
  picker({
    input: $("info-people"),
    results: $("info-results"),
    exclude: () => new Set((state.convs.get(state.open)?.members ?? []).map((m) => m.user_id)),
    onPick: addMember,
  });

  $("new-group").addEventListener("click", openNewGroup);
  $("new-group-cancel").addEventListener("click", () => $("new-group-dialog").close());
  $("new-group-form").addEventListener("submit", createGroup);
  groupPicker = picker({
    input: $("group-people"),
    results: $("group-results"),
    exclude: () => new Set([me.id, ...newGroup.picked.keys()]),
    onPick: (user) => {
      newGroup.picked.set(user.id, user);
      renderPicked();
      $("group-people").value = "";
      fill($("group-results"));
      $("group-people").focus();
    },
  });

  $("viewer").addEventListener("click", (event) => {
    if (event.target === $("viewer")) $("viewer").close(); // a click on the backdrop
  });
  $("viewer").addEventListener("close", () => $("viewer-img").removeAttribute("src"));
  $("notice-close").addEventListener("click", () => ($("notice").hidden = true));
  $("notify").addEventListener("click", turnOnNotifications);
  $("logout-form").addEventListener("submit", () => {
    client.stop();
    client.forget();
  });

  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", markSeen);
  window.addEventListener("focus", markSeen);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !event.defaultPrevented && state.open != null && root.dataset.view === "chat" && !document.querySelector("dialog[open]") && !openMenu && document.activeElement !== $("message")) {
      if (window.matchMedia("(max-width: 760px)").matches) location.hash = "#/";
    }
  });
}

async function boot() {
  bindUI();
  const mine = document.querySelector(".avatar--me");
  mine.replaceWith(avatar(me.name, `u${me.id}`, "avatar--me"));
  let items = [];
  try {
    items = await get("/api/v1/conversations/");
  } catch (error) {
    notify(`Could not load your chats: ${error.message}`);
  }
  for (const item of items) {
    const conv = upsertConv(item);
    if (item.last_message) client.ingest([item.last_message]);
    if ((conv.delivered_seq ?? 0) < conv.last_seq) client.markDelivered(conv.id, conv.last_seq);
  }
  watchPeers();
  renderList();
  route();
  client.start();
  $("new-group").disabled = false;
  $("notify").disabled = !pushSupported();
  if (pushSupported() && Notification.permission === "granted") registerServiceWorker().catch(() => {});
}

boot();
