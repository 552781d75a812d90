/* The service worker, served at /sw.js (scope "/": the whole app) by accounts.views.
 *
 * It shows Web Push notifications while no tab is looking at the chat. The payload is the
 * JSON that notifications/services.py builds; what this reads of it (anything missing falls
 * back to plain words):
 *   {"type": "message", "conversation_id": 3, "tag": "conversation-3", "title": "Bob",
 *    "body": "Hi!", "unread": 2, "badge": 5}
 *   {"type": "clear", "conversation_id": 3, "tag": "conversation-3"}  -> close its notifications
 * Notifications are tagged per conversation, so a new one replaces the last of its chat.
 */

const tagOf = (conversationId) => (conversationId != null ? `conversation-${conversationId}` : "chat");

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

async function closeNotifications(tag) {
  for (const notification of await self.registration.getNotifications({ tag })) notification.close();
}

async function visibleChat(conversationId) {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  return windows.some(
    (client) => client.visibilityState === "visible" && new URL(client.url).hash === `#/c/${conversationId}`,
  );
}

async function show(data) {
  const conversationId = data.conversation_id ?? null;
  const tag = typeof data.tag === "string" && data.tag ? data.tag : tagOf(conversationId);
  if (Number.isInteger(data.badge) && "setAppBadge" in self.navigator) {
    await (data.badge ? self.navigator.setAppBadge(data.badge) : self.navigator.clearAppBadge()).catch(() => {});
  }
  if (data.type === "clear") {
    await closeNotifications(tag);
    return;
  }
  if (conversationId != null && (await visibleChat(conversationId))) return; // the user is looking at it
  const unread = Number(data.unread ?? 0);
  const body = data.body || "New message";
  await self.registration.showNotification(data.title || "New message", {
    body: unread > 1 ? `${body} (${unread} unread)` : body,
    tag,
    renotify: true,
    data: { url: data.url || (conversationId != null ? `/#/c/${conversationId}` : "/"), conversationId },
  });
}

self.addEventListener("push", (event) => {
  let data = {};
  if (event.data) {
    try {
      data = event.data.json();
    } catch {
      data = { body: event.data.text() };
    }
  }
  event.waitUntil(show(data && typeof data === "object" ? data : {}));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const target = new URL(event.notification.data?.url || "/", self.location.origin).href;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const existing = windows.find((client) => new URL(client.url).origin === self.location.origin);
      if (existing) {
        try {
          await existing.focus();
          if ("navigate" in existing) await existing.navigate(target);
          return;
        } catch {
          /* not ours to steer (uncontrolled): open a new window instead */
        }
      }
      await self.clients.openWindow(target);
    })(),
  );
});
