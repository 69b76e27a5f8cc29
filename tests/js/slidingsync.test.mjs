// Sliding sync (MSC4186) against a running Chatalot with matrix-js-sdk's
// SlidingSync class and its Rust crypto. tests/slidingsync_node_test.go
// starts the server and runs this file with CHATALOT_URL (and
// CHATALOT_BODIES_FILE, as e2ee.test.mjs).
//
// Bob syncs with sliding sync only; Alice with /v3/sync, so that each
// direction crosses the two engines: the room list, an invite, a join, a
// room subscription with its history, encrypted messages both ways (room
// keys arrive by the to_device extension, Alice's devices by e2ee), typing
// and receipts, and back-pagination from prev_batch.
import "./polyfill.mjs";
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { appendFileSync } from "node:fs";

const sdk = await import("matrix-js-sdk");
const { SlidingSync } = await import("matrix-js-sdk/lib/sliding-sync.js");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel("warn");

const baseUrl = process.env.CHATALOT_URL;
const bodiesFile = process.env.CHATALOT_BODIES_FILE;
const password = "correct horse battery staple";
const started = [];

after(() => {
  for (const c of started) c.stopClient();
  setTimeout(() => process.exit(), 3000).unref();
});

function suffix() {
  return randomBytes(6).toString("hex");
}

function body(what) {
  const b = `${what} ${suffix()}`;
  if (bodiesFile) appendFileSync(bodiesFile, b + "\n");
  return b;
}

// waitFor re-checks cond after every sync or decryption, and rejects at the
// deadline.
async function waitFor(what, clients, cond, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => {
      const timer = setTimeout(done, Math.min(left, 500));
      const events = [sdk.ClientEvent.Sync, sdk.MatrixEventEvent.Decrypted, sdk.RoomEvent.Timeline, sdk.RoomMemberEvent.Typing];
      function done() {
        clearTimeout(timer);
        for (const c of clients) for (const e of events) c.off(e, done);
        resolve();
      }
      for (const c of clients) for (const e of events) c.on(e, done);
    });
  }
}

async function register(localpart) {
  const tmp = sdk.createClient({ baseUrl });
  const req = { username: localpart, password, initial_device_display_name: "js sliding test" };
  try {
    return await tmp.registerRequest(req);
  } catch (e) {
    if (e.httpStatus !== 401 || !e.data?.session) throw e;
    return tmp.registerRequest({ ...req, auth: { type: "m.login.dummy", session: e.data.session } });
  }
}

function newClient(creds) {
  const client = sdk.createClient({ baseUrl, userId: creds.user_id, accessToken: creds.access_token, deviceId: creds.device_id });
  client.decrypted = new Set();
  client.on(sdk.MatrixEventEvent.Decrypted, (ev) => {
    if (!ev.isDecryptionFailure() && ev.getType() === "m.room.message") client.decrypted.add(ev.getContent().body);
  });
  return client;
}

async function startClient(client, opts) {
  await client.initRustCrypto({ useIndexedDB: false });
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(new Error("sync failed"));
    });
  });
  client.startClient(opts);
  started.push(client);
  await prepared;
  return client;
}

// The room list Element Web asks for, and the subscription of an open room.
const allState = [["*", "*"]];
function slidingSyncFor(client) {
  const lists = new Map([
    ["all", { ranges: [[0, 19]], required_state: [["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$ME"], ["m.room.member", "$LAZY"], ["m.room.create", ""]], timeline_limit: 1, filters: {} }],
    ["invites", { ranges: [[0, 19]], required_state: allState, timeline_limit: 1, filters: { is_invite: true } }],
  ]);
  return new SlidingSync(baseUrl, lists, { required_state: allState, timeline_limit: 20 }, client, 5000);
}

test("matrix-js-sdk SlidingSync: room list, subscription, E2EE, ephemeral events", async (t) => {
  assert.ok(baseUrl, "CHATALOT_URL must be set");
  const s = suffix();
  const aliceCreds = await register(`ssalice${s}`);
  const bobCreds = await register(`ssbob${s}`);
  const alice = await startClient(newClient(aliceCreds), { initialSyncLimit: 20 });
  const bob = newClient(bobCreds);
  const ss = slidingSyncFor(bob);
  let lastResponse = null;
  ss.on("SlidingSync.Lifecycle", (state, resp) => {
    if (resp) lastResponse = resp;
  });
  await startClient(bob, { slidingSync: ss });
  const aliceId = aliceCreds.user_id;
  const bobId = bobCreds.user_id;

  // Before anything, a plain room to see in the list.
  const { room_id: plain } = await alice.createRoom({ preset: "public_chat", name: "plain room" });
  await bob.joinRoom(plain);
  await waitFor("bob's list shows the plain room", [bob], () => bob.getRoom(plain)?.name === "plain room");

  const { room_id: roomId } = await alice.createRoom({
    preset: "private_chat",
    name: "secret room",
    invite: [bobId],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  await waitFor("bob sees the invite", [bob], () => bob.getRoom(roomId)?.getMyMembership() === "invite");
  await bob.joinRoom(roomId);
  await waitFor("bob is joined", [bob], () => bob.getRoom(roomId)?.getMyMembership() === "join");
  await waitFor("alice sees bob join", [alice], () => alice.getRoom(roomId)?.getMember(bobId)?.membership === "join");

  await t.test("encrypted messages both ways", async () => {
    const toBob = body("sliding secret for bob");
    await alice.sendTextMessage(roomId, toBob);
    await waitFor("bob decrypts (room key by to_device)", [bob], () => bob.decrypted.has(toBob));
    const toAlice = body("sliding secret for alice");
    await bob.sendTextMessage(roomId, toAlice);
    await waitFor("alice decrypts (bob's device found by e2ee)", [alice], () => alice.decrypted.has(toAlice));
  });

  await t.test("a room subscription brings the room's history, and prev_batch pages back", async () => {
    for (let i = 0; i < 5; i++) await alice.sendTextMessage(plain, `history ${i}`);
    await waitFor("bob's list has the latest", [bob], () =>
      bob.getRoom(plain)?.getLiveTimeline().getEvents().some((e) => e.getContent().body === "history 4"));
    ss.modifyRoomSubscriptions(new Set([plain]));
    await waitFor("the subscription brings the history", [bob], () => {
      const bodies = bob.getRoom(plain).getLiveTimeline().getEvents().map((e) => e.getContent().body);
      return bodies.includes("history 0") && bodies.includes("history 4");
    });
    const room = bob.getRoom(plain);
    const more = await bob.paginateEventTimeline(room.getLiveTimeline(), { backwards: true, limit: 20 });
    assert.equal(typeof more, "boolean");
    const types = room.getLiveTimeline().getEvents().map((e) => e.getType());
    assert.ok(types.includes("m.room.create"), "back-pagination reaches the room's creation");
  });

  await t.test("typing and receipts arrive by their extensions", async () => {
    await alice.sendTyping(roomId, true, 30000);
    await waitFor("bob sees alice typing", [bob], () => bob.getRoom(roomId)?.getMember(aliceId)?.typing === true);
    const last = alice.getRoom(roomId).getLiveTimeline().getEvents().at(-1);
    await alice.sendReadReceipt(last);
    await waitFor("bob sees alice's receipt", [bob], () => bob.getRoom(roomId)?.getEventReadUpTo(aliceId) === last.getId());
  });

  await t.test("a left room: bob's own leave reaches his client", async () => {
    await bob.leave(plain);
    await waitFor("bob's client knows he left", [bob], () => bob.getRoom(plain)?.getMyMembership() === "leave");
  });

  assert.ok(lastResponse?.pos, "sliding sync answered with a pos");
});
