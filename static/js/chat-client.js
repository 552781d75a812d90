/**
 * A small client for the chat WebSocket protocol (docs/protocol.md), with no DOM code,
 * so that any front end (this web app, a test, another page) can reuse it.
 *
 * It keeps one socket to /ws/ alive: it pings every `heartbeat_seconds` and treats a
 * missing pong, or the browser's `offline` event, as a lost connection (browsers freeze
 * open sockets instead of closing them); it reconnects with jittered exponential backoff
 * (after close code 1012, "service restart", within a second) and then sends `sync` with
 * its per-conversation cursors (the highest `version` applied).
 * It keeps an outbox of unsent messages, persisted in localStorage with their
 * `client_msg_id`, and sends them whenever it is connected until each is acked (the
 * server deduplicates retries). It deduplicates messages by (conversation, seq), keeping
 * the copy with the highest version, and resyncs a conversation when seqs have a gap.
 *
 * Events (CustomEvent, read `event.detail`):
 *   state         {state}: "connecting" | "connected" | "reconnecting" | "offline"
 *   hello         the server's hello frame
 *   message       {message, previous, source}: a message applied (source "ack", "new",
 *                 "updated", "sync" or "history"); `previous` is the copy it replaced
 *   outbox        {conversationId}: the outbox changed (see `pending(conversationId)`)
 *   receipt       {conversation_id, user_id, delivered_seq, read_seq}
 *   typing        the typing frame
 *   presence      the presence frame
 *   conversation  {conversation}: a conversation's state from a sync batch
 *   removed       {conversationId}: you left or were removed
 *   synced        a sync finished (sync.done)
 *   servererror   an error frame that answers no pending request
 *   unauthorized  the server closed with 4401 (logged out): the client stops
 */

export const STATES = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  OFFLINE: "offline",
});

const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_RATE_LIMITED = 4429;
const CLOSE_SERVICE_RESTART = 1012; // a server drains, or lost live delivery: come back at once
const RESTART_JITTER_MS = 1000;
const REQUEST_TIMEOUT_MS = 15000;
const HELLO_TIMEOUT_MS = 10000;
const PRESENCE_CHUNK = 256;
const OFFLINE_RECHECK_MS = 30000;

/** A random id that also works outside secure contexts (where randomUUID is missing). */
export function randomId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function defaultUrl() {
  const { protocol, host } = globalThis.location;
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}/ws/`;
}

export class ChatError extends Error {
  constructor(code, detail, fields = null) {
    super(detail || code);
    this.code = code;
    this.fields = fields;
  }
}

export class ChatClient extends EventTarget {
  /**
   * @param {object} options
   * @param {number|string} options.userId   whose cursors and outbox to keep (storage keys)
   * @param {string} [options.url]           defaults to this origin's /ws/
   * @param {Storage|null} [options.storage] defaults to localStorage
   * @param {number} [options.backoffBaseMs] first reconnect delay (doubles each attempt)
   * @param {number} [options.backoffMaxMs]  longest reconnect delay
   * @param {number} [options.pongTimeoutMs] how long to wait for a pong (default: half the
   *                                         heartbeat, between 2 and 10 seconds)
   */
  constructor({
    userId,
    url = defaultUrl(),
    storage = globalThis.localStorage ?? null,
    backoffBaseMs = 500,
    backoffMaxMs = 30000,
    pongTimeoutMs = null,
  }) {
    super();
    this.userId = String(userId);
    this.url = url;
    this.storage = storage;
    this.backoffBaseMs = backoffBaseMs;
    this.backoffMaxMs = backoffMaxMs;
    this.pongTimeoutMs = pongTimeoutMs;

    this.state = STATES.CONNECTING;
    this.hello = null;
    this.ws = null;
    this.attempt = 0;
    this.running = false;
    this.timers = { reconnect: null, heartbeat: null, pong: null, hello: null, persist: null };
    this.nextId = 1;
    this.requests = new Map(); // frame id -> {resolve, reject, timer}

    this.cursors = this._load("cursors", {}); // conversation id -> highest version applied
    this.outbox = this._load("outbox", []); // unsent messages, oldest first
    this.messages = new Map(); // conversation id -> Map(seq -> message)
    this.byId = new Map(); // message id -> message
    this.lastSeq = new Map(); // conversation id -> highest seq seen
    this.stale = new Set(); // conversations with a seq gap: cursor frozen until synced
    this.syncing = null; // id of the sync in flight
    this.resyncWanted = false;
    this.wantReceipts = new Map(); // conversation id -> {delivered, read} we want the server to have
    this.sentReceipts = new Map(); // conversation id -> {delivered, read} sent on this socket
    this.receiptsQueued = false;
    this.watching = new Set(); // user ids whose presence we follow

    for (const item of this.outbox) if (item.status === "sending") item.status = "queued";

    this._onOnline = () => this._handleOnline();
    this._onOffline = () => this._handleOffline();
    this._onVisible = () => {
      if (globalThis.document?.visibilityState === "visible") this._probe();
    };
    this._onStorage = (event) => this._handleStorage(event);
  }

  // --- lifecycle ------------------------------------------------------------------------------

  start() {
    if (this.running) return;
    this.running = true;
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
    globalThis.addEventListener?.("storage", this._onStorage);
    globalThis.document?.addEventListener("visibilitychange", this._onVisible);
    this._connect();
  }

  stop() {
    this.running = false;
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
    globalThis.removeEventListener?.("storage", this._onStorage);
    globalThis.document?.removeEventListener("visibilitychange", this._onVisible);
    this._drop("stopped");
    clearTimeout(this.timers.reconnect);
    this._persistNow();
  }

  /** Forget this user's stored cursors and outbox (on logout). */
  forget() {
    this.outbox = [];
    this.cursors = {};
    try {
      this.storage?.removeItem(this._key("cursors"));
      this.storage?.removeItem(this._key("outbox"));
    } catch {
      /* storage unavailable */
    }
  }

  get connected() {
    return this.state === STATES.CONNECTED;
  }

  _online() {
    return globalThis.navigator?.onLine !== false;
  }

  _connect() {
    clearTimeout(this.timers.reconnect);
    if (!this.running || this.ws) return;
    if (!this._online()) {
      this._waitForNetwork();
      return;
    }
    this._setState(this.hello || this.attempt > 0 ? STATES.RECONNECTING : STATES.CONNECTING);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this._lost(1006);
      return;
    }
    this.ws = ws;
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => {
      if (this.ws === ws) this._lost(event.code);
    };
    ws.onerror = () => {}; // a close event follows
    this.timers.hello = setTimeout(() => {
      if (this.ws === ws) this._lost(1006); // opened (or not) but never said hello
    }, HELLO_TIMEOUT_MS);
  }

  /** Tear the current socket down without waiting for a close handshake that may never come. */
  _drop(reason) {
    const ws = this.ws;
    this.ws = null;
    for (const name of ["heartbeat", "pong", "hello"]) {
      clearTimeout(this.timers[name]);
      clearInterval(this.timers[name]);
      this.timers[name] = null;
    }
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, reason);
      } catch {
        /* already closing */
      }
    }
    for (const [, request] of this.requests) {
      clearTimeout(request.timer);
      request.reject(new ChatError("disconnected", "The connection was lost."));
    }
    this.requests.clear();
    this.syncing = null;
    this.sentReceipts.clear();
    let changed = false;
    for (const item of this.outbox) {
      if (item.status === "sending") {
        item.status = "queued";
        changed = true;
      }
    }
    if (changed) this._outboxChanged(null);
  }

  _lost(code) {
    this._drop("lost");
    if (!this.running) return;
    if (code === CLOSE_UNAUTHENTICATED) {
      this.running = false;
      this._setState(STATES.OFFLINE);
      this._emit("unauthorized", { code });
      return;
    }
    if (!this._online()) {
      this._waitForNetwork();
      return;
    }
    this._setState(STATES.RECONNECTING);
    const ceiling = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** this.attempt);
    let delay = ceiling / 2 + Math.random() * (ceiling / 2); // jitter: spread reconnect storms
    if (code === CLOSE_RATE_LIMITED) delay = Math.max(delay, 30000);
    // Service restart: another server (or this one, live again) takes us now; only a little
    // jitter, so the sockets of a whole process do not all arrive in the same millisecond.
    if (code === CLOSE_SERVICE_RESTART) delay = Math.random() * RESTART_JITTER_MS;
    this.attempt += 1;
    this.timers.reconnect = setTimeout(() => this._connect(), delay);
  }

  /** Offline: the `online` event brings us back; a slow timer too, in case it never comes. */
  _waitForNetwork() {
    this._setState(STATES.OFFLINE);
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this._connect(), OFFLINE_RECHECK_MS);
  }

  _handleOnline() {
    if (!this.running) return;
    if (this.ws && this.connected) {
      this._probe();
      return;
    }
    this.attempt = 0;
    clearTimeout(this.timers.reconnect);
    if (!this.ws) this._connect();
  }

  _handleOffline() {
    if (!this.running) return;
    this._drop("offline");
    this._waitForNetwork();
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // --- heartbeat ------------------------------------------------------------------------------

  _startHeartbeat(seconds) {
    const everyMs = Math.max(1, Number(seconds) || 25) * 1000;
    clearInterval(this.timers.heartbeat);
    this.timers.heartbeat = setInterval(() => this._probe(), everyMs);
  }

  /** Send a ping; no pong in time means the socket is dead (perhaps frozen). */
  _probe() {
    if (!this.ws || !this.connected || this.timers.pong) return;
    const heartbeatMs = (this.hello?.heartbeat_seconds ?? 25) * 1000;
    const timeout = this.pongTimeoutMs ?? Math.min(10000, Math.max(2000, heartbeatMs / 2));
    const ws = this.ws;
    this.timers.pong = setTimeout(() => {
      this.timers.pong = null;
      if (this.ws === ws) this._lost(1006);
    }, timeout);
    this._send({ type: "ping", id: `p${this.nextId++}` });
  }

  // --- frames -----------------------------------------------------------------------------------

  _send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** Send a frame and wait for its reply (a frame echoing its id), or reject on error. */
  request(frame) {
    if (!this.connected) {
      return Promise.reject(new ChatError("offline", "You are offline. Try again when connected."));
    }
    const id = `r${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.requests.delete(id);
        reject(new ChatError("timeout", "The server did not answer in time."));
      }, REQUEST_TIMEOUT_MS);
      this.requests.set(id, { resolve, reject, timer });
      if (!this._send({ ...frame, id })) {
        clearTimeout(timer);
        this.requests.delete(id);
        reject(new ChatError("offline", "You are offline. Try again when connected."));
      }
    });
  }

  _receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    const request = frame.id != null ? this.requests.get(frame.id) : undefined;
    switch (frame.type) {
      case "hello":
        this._onHello(frame);
        break;
      case "pong":
        clearTimeout(this.timers.pong);
        this.timers.pong = null;
        break;
      case "message.ack":
        this._onAck(frame);
        break;
      case "message.new":
        this._applyLive(frame.message, "new");
        break;
      case "message.updated":
        this._applyLive(frame.message, "updated");
        break;
      case "receipt.update":
        this._emit("receipt", frame);
        break;
      case "typing":
        this._emit("typing", frame);
        break;
      case "presence":
        this._emit("presence", frame);
        break;
      case "sync.batch":
        this._onSyncBatch(frame);
        break;
      case "sync.done":
        this._onSyncDone(frame);
        break;
      case "conversation.removed":
        this._onRemoved(frame.conversation_id);
        break;
      case "error":
        if (String(frame.id ?? "").startsWith("m:")) this._onSendError(frame);
        else if (!request) this._emit("servererror", frame);
        break;
      default:
        break;
    }
    if (request) {
      this.requests.delete(frame.id);
      clearTimeout(request.timer);
      if (frame.type === "error") request.reject(new ChatError(frame.code, frame.detail, frame.fields));
      else request.resolve(frame);
    }
  }

  _onHello(frame) {
    clearTimeout(this.timers.hello);
    this.timers.hello = null;
    this.hello = frame;
    this._startHeartbeat(frame.heartbeat_seconds);
    this._setState(STATES.CONNECTED);
    this._emit("hello", frame);
    // Live events already reach this socket, so a sync sent now misses nothing.
    this.stale.clear();
    this.sync();
    this._resubscribePresence();
    this._flushReceipts();
    this._flushOutbox();
  }

  // --- messages, cursors and sync ---------------------------------------------------------

  /** Tell the client what a REST call showed about a conversation, before the first sync:
   * conversations without a stored cursor start from this version instead of from 0
   * (the app reads their history over REST instead). */
  seed(conversationId, { version, last_seq: lastSeq } = {}) {
    const key = String(conversationId);
    if (this.cursors[key] === undefined && Number.isInteger(version)) {
      this.cursors[key] = version;
      this._persistSoon();
    }
    if (Number.isInteger(lastSeq)) this._seeSeq(conversationId, lastSeq);
  }

  /** Ask the server for everything changed after our cursors (after connecting or a gap). */
  sync() {
    if (!this.connected) return;
    if (this.syncing) {
      this.resyncWanted = true;
      return;
    }
    this.syncing = `s${this.nextId++}`;
    this.stale.clear();
    this._send({ type: "sync", id: this.syncing, cursors: { ...this.cursors } });
  }

  _onSyncBatch(frame) {
    const conversationId = frame.conversation_id;
    if (frame.conversation) {
      this._seeSeq(conversationId, frame.conversation.last_seq);
      this._emit("conversation", { conversation: frame.conversation });
    }
    for (const message of frame.messages || []) {
      this._apply(message, "sync");
      this._seeSeq(conversationId, message.seq);
    }
    const key = String(conversationId);
    if (Number.isInteger(frame.version)) {
      this.cursors[key] = Math.max(this.cursors[key] ?? 0, frame.version);
      this._persistSoon();
    }
  }

  _onSyncDone(frame) {
    if (frame.id === this.syncing) this.syncing = null;
    this.attempt = 0; // a working connection: the next loss starts the backoff afresh
    for (const conversationId of frame.removed || []) this._onRemoved(conversationId);
    for (const receipt of frame.receipts || []) this._emit("receipt", { type: "receipt.update", ...receipt });
    this._emit("synced", frame);
    if (this.resyncWanted) {
      this.resyncWanted = false;
      this.sync();
    }
  }

  _onRemoved(conversationId) {
    this.forgetConversation(conversationId);
    this._emit("removed", { conversationId });
  }

  /** Drop what we hold of a conversation (we left it): joining again starts afresh. */
  forgetConversation(conversationId) {
    const key = String(conversationId);
    for (const message of this.messages.get(key)?.values() ?? []) this.byId.delete(message.id);
    this.messages.delete(key);
    this.lastSeq.delete(key);
    this.stale.delete(key);
    this.wantReceipts.delete(key);
    this.sentReceipts.delete(key);
    delete this.cursors[key];
    this._persistSoon();
  }

  _seeSeq(conversationId, seq) {
    if (!Number.isInteger(seq)) return;
    const key = String(conversationId);
    this.lastSeq.set(key, Math.max(this.lastSeq.get(key) ?? 0, seq));
  }

  /** A live message: apply it, advance the cursor, or resync if seqs show a gap. */
  _applyLive(message, source) {
    if (!message) return;
    const key = String(message.conversation_id);
    const known = this.lastSeq.get(key);
    if (source !== "updated" && known !== undefined && message.seq > known + 1) {
      this.stale.add(key); // we missed a live event: resync from the cursor we had
      this.sync();
    }
    this._apply(message, source);
    this._seeSeq(key, message.seq);
    if (!this.stale.has(key) && this.cursors[key] !== undefined) {
      this.cursors[key] = Math.max(this.cursors[key], message.version);
      this._persistSoon();
    }
  }

  /** Apply a message if it is new or newer than ours (dedupe by conversation + seq). */
  _apply(message, source) {
    const key = String(message.conversation_id);
    let messages = this.messages.get(key);
    if (!messages) {
      messages = new Map();
      this.messages.set(key, messages);
    }
    const previous = messages.get(message.seq);
    if (previous && previous.version >= message.version) return false;
    messages.set(message.seq, message);
    this.byId.set(message.id, message);
    this._emit("message", { message, previous: previous ?? null, source });
    return true;
  }

  /** Messages read over REST (history pages): applied like any other, cursors untouched. */
  ingest(messages) {
    for (const message of messages) {
      this._apply(message, "history");
      this._seeSeq(message.conversation_id, message.seq);
    }
  }

  /** The messages we hold for a conversation, by seq. */
  conversationMessages(conversationId) {
    const messages = this.messages.get(String(conversationId));
    return messages ? [...messages.values()].sort((a, b) => a.seq - b.seq) : [];
  }

  message(messageId) {
    return this.byId.get(messageId) ?? null;
  }

  // --- the outbox -------------------------------------------------------------------------------

  /**
   * Queue a message; it is sent now if connected, else on reconnect, until acked.
   * `local` is kept with it for display while it waits (e.g. attachment descriptions).
   */
  send(conversationId, { body = "", replyTo = null, attachmentIds = [], local = null } = {}) {
    const item = {
      conversation_id: Number(conversationId),
      client_msg_id: randomId(),
      body,
      reply_to: replyTo,
      attachment_ids: attachmentIds,
      local,
      created_at: new Date().toISOString(),
      status: "queued",
      error: null,
    };
    this.outbox.push(item);
    this._outboxChanged(item.conversation_id);
    if (this.connected) this._sendItem(item);
    return item;
  }

  /** Unacked messages of a conversation (or all), oldest first. */
  pending(conversationId = null) {
    return this.outbox.filter((i) => conversationId == null || i.conversation_id === Number(conversationId));
  }

  retry(clientMsgId) {
    const item = this.outbox.find((i) => i.client_msg_id === clientMsgId);
    if (!item) return;
    item.status = "queued";
    item.error = null;
    this._outboxChanged(item.conversation_id);
    if (this.connected) this._sendItem(item);
  }

  discard(clientMsgId) {
    const item = this.outbox.find((i) => i.client_msg_id === clientMsgId);
    if (!item) return;
    this.outbox = this.outbox.filter((i) => i !== item);
    this._outboxChanged(item.conversation_id);
  }

  _flushOutbox() {
    for (const item of this.outbox) if (item.status === "queued") this._sendItem(item);
  }

  _sendItem(item) {
    const frame = {
      type: "message.send",
      id: `m:${item.client_msg_id}`,
      conversation_id: item.conversation_id,
      client_msg_id: item.client_msg_id,
      body: item.body,
    };
    if (item.reply_to != null) frame.reply_to = item.reply_to;
    if (item.attachment_ids?.length) frame.attachment_ids = item.attachment_ids;
    if (this._send(frame)) {
      item.status = "sending";
      this._outboxChanged(item.conversation_id, false);
    }
  }

  _onAck(frame) {
    const message = frame.message;
    if (!message) return;
    const before = this.outbox.length;
    this.outbox = this.outbox.filter((i) => i.client_msg_id !== message.client_msg_id);
    this._applyLive(message, "ack");
    if (this.outbox.length !== before) this._outboxChanged(message.conversation_id);
  }

  _onSendError(frame) {
    const clientMsgId = String(frame.id).slice(2);
    const item = this.outbox.find((i) => i.client_msg_id === clientMsgId);
    if (!item) return;
    if (frame.code === "rate_limited") {
      item.status = "queued";
      setTimeout(() => {
        if (item.status === "queued" && this.connected) this._sendItem(item);
      }, 1500 + Math.random() * 1500);
    } else {
      item.status = "failed";
      item.error = frame.detail || frame.code;
    }
    this._outboxChanged(item.conversation_id);
  }

  _outboxChanged(conversationId, persist = true) {
    if (persist) this._persistSoon();
    this._emit("outbox", { conversationId });
  }

  // --- other writes -------------------------------------------------------------------------

  edit(conversationId, messageId, body) {
    return this._change({ type: "message.edit", conversation_id: conversationId, message_id: messageId, body });
  }

  delete(conversationId, messageId) {
    return this._change({ type: "message.delete", conversation_id: conversationId, message_id: messageId });
  }

  react(conversationId, messageId, emoji) {
    return this._change({ type: "reaction.set", conversation_id: conversationId, message_id: messageId, emoji });
  }

  async _change(frame) {
    const reply = await this.request(frame);
    if (reply.message) this._applyLive(reply.message, "updated");
    return reply.message;
  }

  /** Tell the server this device has the conversation up to `seq` (sent once per new high). */
  markDelivered(conversationId, seq) {
    this._wantReceipt(conversationId, "delivered", seq);
  }

  /** Tell the server the user has seen the conversation up to `seq` (implies delivered). */
  markRead(conversationId, seq) {
    this._wantReceipt(conversationId, "read", seq);
  }

  _wantReceipt(conversationId, status, seq) {
    if (!Number.isInteger(seq) || seq <= 0) return;
    const key = String(conversationId);
    const want = this.wantReceipts.get(key) ?? { delivered: 0, read: 0 };
    if (want[status] >= seq) return;
    want[status] = seq;
    if (status === "read") want.delivered = Math.max(want.delivered, seq);
    this.wantReceipts.set(key, want);
    // A sync batch applies many messages in one go: send one receipt for all of them.
    if (!this.receiptsQueued) {
      this.receiptsQueued = true;
      queueMicrotask(() => {
        this.receiptsQueued = false;
        this._flushReceipts();
      });
    }
  }

  _flushReceipts() {
    if (!this.connected) return;
    for (const [key, want] of this.wantReceipts) {
      const sent = this.sentReceipts.get(key) ?? { delivered: 0, read: 0 };
      const conversationId = Number(key);
      if (want.read > sent.read) {
        if (!this._send({ type: "receipt", conversation_id: conversationId, status: "read", seq: want.read })) return;
        sent.read = want.read;
        sent.delivered = Math.max(sent.delivered, want.read);
      }
      if (want.delivered > sent.delivered) {
        const frame = { type: "receipt", conversation_id: conversationId, status: "delivered", seq: want.delivered };
        if (!this._send(frame)) return;
        sent.delivered = want.delivered;
      }
      this.sentReceipts.set(key, sent);
    }
  }

  typing(conversationId, state) {
    this._send({ type: "typing", conversation_id: Number(conversationId), state });
  }

  /** Follow these users' presence (now, and again after every reconnect). */
  watchPresence(userIds) {
    const fresh = userIds.map(Number).filter((id) => Number.isInteger(id) && !this.watching.has(id));
    if (!fresh.length) return;
    const room = Math.max(0, PRESENCE_CHUNK - this.watching.size);
    const taken = fresh.slice(0, room);
    for (const id of taken) this.watching.add(id);
    if (this.connected && taken.length) this._send({ type: "presence.subscribe", user_ids: taken });
  }

  _resubscribePresence() {
    const ids = [...this.watching];
    if (ids.length) this._send({ type: "presence.subscribe", user_ids: ids.slice(0, PRESENCE_CHUNK) });
  }

  // --- persistence ------------------------------------------------------------------------------

  _key(name) {
    return `chat:v1:${this.userId}:${name}`;
  }

  _load(name, fallback) {
    try {
      const raw = this.storage?.getItem(this._key(name));
      return raw ? JSON.parse(raw) : fallback;
    } catch {
      return fallback;
    }
  }

  _persistSoon() {
    if (this.timers.persist) return;
    this.timers.persist = setTimeout(() => this._persistNow(), 50);
  }

  _persistNow() {
    clearTimeout(this.timers.persist);
    this.timers.persist = null;
    if (!this.storage) return;
    try {
      // Another tab of the same user may have stored higher cursors: keep the highest.
      const merged = this._load("cursors", {});
      for (const [key, version] of Object.entries(this.cursors)) merged[key] = Math.max(version, merged[key] ?? 0);
      this.storage.setItem(this._key("cursors"), JSON.stringify(merged));
      const outbox = this.outbox.map((item) => ({ ...item, status: item.status === "failed" ? "failed" : "queued" }));
      this.storage.setItem(this._key("outbox"), JSON.stringify(outbox));
    } catch {
      /* storage full or unavailable: the outbox still lives in memory */
    }
  }

  /** Another tab of this user changed the outbox: adopt its new items, drop the ones it sent. */
  _handleStorage(event) {
    if (event.key !== this._key("outbox") || event.newValue == null) return;
    let theirs;
    try {
      theirs = JSON.parse(event.newValue);
    } catch {
      return;
    }
    if (!Array.isArray(theirs)) return;
    const stored = new Set(theirs.map((i) => i.client_msg_id));
    const mine = new Set(this.outbox.map((i) => i.client_msg_id));
    const touched = new Set();
    const kept = this.outbox.filter((i) => {
      const keep = stored.has(i.client_msg_id) || i.status === "sending";
      if (!keep) touched.add(i.conversation_id);
      return keep;
    });
    const adopted = theirs.filter((i) => !mine.has(i.client_msg_id)).map((i) => ({ ...i, status: "queued" }));
    if (!adopted.length && kept.length === this.outbox.length) return;
    this.outbox = [...kept, ...adopted];
    for (const item of adopted) {
      touched.add(item.conversation_id);
      if (this.connected) this._sendItem(item);
    }
    for (const conversationId of touched) this._emit("outbox", { conversationId });
  }
}
