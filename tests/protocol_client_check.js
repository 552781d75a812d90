async () => {
  // Run by tests/test_browser_chat.py in a page of the app: drives static/js/chat-client.js
  // against a scripted socket and returns what it saw, for the test to check.
  const { ChatClient } = await import("/static/js/chat-client.js");
  const sent = [];
  class FakeSocket {
    static OPEN = 1;
    constructor(url) {
      this.url = url;
      this.readyState = 1;
      FakeSocket.count = (FakeSocket.count || 0) + 1;
      FakeSocket.last = this;
      const hello = { type: "hello", heartbeat_seconds: 25 };
      setTimeout(() => this.onmessage?.({ data: JSON.stringify(hello) }), 0);
    }
    send(text) {
      sent.push(JSON.parse(text));
    }
    close() {
      this.readyState = 3;
    }
  }
  globalThis.WebSocket = FakeSocket;
  const data = new Map();
  const storage = {
    getItem: (key) => data.get(key) ?? null,
    setItem: (key, value) => data.set(key, value),
    removeItem: (key) => data.delete(key),
  };
  const stored = () => JSON.parse(data.get("chat:v1:1:outbox") ?? "[]").length;
  const tick = () => new Promise((resolve) => setTimeout(resolve, 80));
  const push = (frame) => FakeSocket.last.onmessage({ data: JSON.stringify(frame) });
  const msg = (seq, version, body = `m${seq}`) => ({ id: 100 + seq, conversation_id: 3, seq, version, sender_id: 2, body });

  const client = new ChatClient({ userId: 1, url: "ws://test/ws/", storage });
  const applied = [];
  const states = [];
  client.addEventListener("message", ({ detail }) => {
    applied.push(`${detail.source}:${detail.message.seq}@${detail.message.version}`);
  });
  client.addEventListener("state", ({ detail }) => states.push(detail.state));
  client.seed(3, { version: 10, last_seq: 5 });
  client.start();
  await tick();

  const firstSync = sent.find((f) => f.type === "sync");
  push({ type: "sync.batch", id: firstSync.id, conversation_id: 3, messages: [msg(6, 11)], version: 11, has_more: false });
  push({ type: "sync.done", id: firstSync.id, removed: [], receipts: [] });
  push({ type: "message.new", message: msg(7, 12) });
  push({ type: "message.new", message: msg(7, 12) }); // a duplicate: ignored
  push({ type: "message.updated", message: msg(6, 13, "edited") });
  push({ type: "message.updated", message: msg(6, 11) }); // older than ours: ignored
  const beforeGap = { ...client.cursors };
  push({ type: "message.new", message: msg(9, 15) }); // seq 8 is missing: resync from 13
  const resync = sent.filter((f) => f.type === "sync")[1];

  client.markDelivered(3, 6);
  client.markDelivered(3, 7);
  client.markRead(3, 7);
  await tick();

  const item = client.send(3, { body: "hello" });
  await tick();
  const storedWhileUnsent = stored();
  dispatchEvent(new Event("offline"));
  const offlineState = client.state;
  dispatchEvent(new Event("online"));
  await tick();
  const sends = sent.filter((f) => f.type === "message.send").map((f) => f.client_msg_id === item.client_msg_id);
  const ack = { ...msg(10, 16, "hello"), sender_id: 1, client_msg_id: item.client_msg_id };
  push({ type: "message.ack", id: `m:${item.client_msg_id}`, message: ack });
  await tick();
  client.stop();
  return {
    applied,
    states,
    beforeGap,
    resync: resync?.cursors,
    stored: storedWhileUnsent,
    offlineState,
    sockets: FakeSocket.count,
    sends,
    outbox: client.pending().length,
    storedAfter: stored(),
    receipts: sent.filter((f) => f.type === "receipt").map((f) => `${f.status}:${f.seq}`),
  };
}
