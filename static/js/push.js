/**
 * Turning on Web Push: ask permission (from a click), register the service worker served at
 * /sw.js (scope "/", the whole app), subscribe with the server's VAPID key and hand the
 * subscription to the server. Every step that can fail says so in plain words.
 */

import { ApiError, get, post } from "./api.js";

export class PushSetupError extends Error {}

function applicationServerKey(base64url) {
  const padded = `${base64url}${"=".repeat((4 - (base64url.length % 4)) % 4)}`.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(padded);
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

/** Register the service worker (it also shows pushes and clears read chats' notifications). */
export async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return null;
  return navigator.serviceWorker.register("/sw.js", { scope: "/" });
}

/** The whole flow; resolves when the server holds this browser's subscription. */
export async function enablePush() {
  if (!pushSupported()) throw new PushSetupError("this browser does not support push notifications.");
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    throw new PushSetupError(
      permission === "denied"
        ? "notifications are blocked for this site in your browser settings."
        : "permission was not given.",
    );
  }
  let registration;
  try {
    await registerServiceWorker();
    registration = await navigator.serviceWorker.ready;
  } catch (error) {
    throw new PushSetupError(`the service worker could not be installed (${error.message}).`);
  }
  let config;
  try {
    config = await get("/api/v1/push/config/");
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      throw new PushSetupError("this server does not offer push notifications.");
    }
    throw new PushSetupError(`the server's push settings could not be read (${error.message}).`);
  }
  if (!config?.vapid_public_key) throw new PushSetupError("this server has no push key configured.");
  let subscription;
  try {
    subscription =
      (await registration.pushManager.getSubscription()) ??
      (await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: applicationServerKey(config.vapid_public_key),
      }));
  } catch (error) {
    throw new PushSetupError(`the browser's push service refused to subscribe (${error.message || error.name}).`);
  }
  const { endpoint, keys } = subscription.toJSON();
  try {
    await post("/api/v1/push/subscriptions/", { kind: "webpush", endpoint, keys: { p256dh: keys.p256dh, auth: keys.auth } });
  } catch (error) {
    throw new PushSetupError(`the server did not accept the subscription (${error.message}).`);
  }
}

/** Close this browser's notifications of a conversation (the user just read it here). */
export async function clearNotifications(conversationId) {
  if (!("serviceWorker" in navigator)) return;
  try {
    const registration = await navigator.serviceWorker.getRegistration("/");
    if (!registration) return;
    for (const notification of await registration.getNotifications({ tag: `conversation-${conversationId}` })) {
      notification.close();
    }
  } catch {
    /* nothing to clear */
  }
}
