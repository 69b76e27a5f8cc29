// End-to-end encryption against a running Chatalot with matrix-js-sdk and its
// Rust crypto (@matrix-org/matrix-sdk-crypto-wasm). tests/keys_js_test.go
// starts the server and runs this file with:
//   CHATALOT_URL          the server's base URL
//   CHATALOT_BODIES_FILE  where to write every message body sent, so that the
//                         Go test can grep the server's data for plaintext.
import "./polyfill.mjs";
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { appendFileSync } from "node:fs";

const sdk = await import("matrix-js-sdk");
const { CryptoEvent } = await import("matrix-js-sdk/lib/crypto-api/index.js");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel("warn");

const baseUrl = process.env.CHATALOT_URL;
const bodiesFile = process.env.CHATALOT_BODIES_FILE;
const password = "correct horse battery staple";
const started = [];

after(() => {
  for (const c of started) c.stopClient();
  // A client whose start failed may leave pollers behind: do not let them
  // keep the process alive (exitCode carries the test result).
  setTimeout(() => process.exit(), 3000).unref();
});

function suffix() {
  return randomBytes(6).toString("hex");
}

// body makes a unique message body and records it for the plaintext check.
function body(what) {
  const b = `${what} ${suffix()}`;
  if (bodiesFile) appendFileSync(bodiesFile, b + "\n");
  return b;
}

// waitFor re-checks cond after every sync, decryption or key change of the
// clients, and rejects at the deadline.
async function waitFor(what, clients, cond, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => {
      const timer = setTimeout(done, Math.min(left, 1000)); // also re-check now and then
      const events = [sdk.ClientEvent.Sync, sdk.MatrixEventEvent.Decrypted, CryptoEvent.DevicesUpdated,
        CryptoEvent.KeysChanged, CryptoEvent.UserTrustStatusChanged, CryptoEvent.KeyBackupSessionsRemaining];
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
  const req = { username: localpart, password, initial_device_display_name: "js test" };
  try {
    return await tmp.registerRequest(req);
  } catch (e) {
    if (e.httpStatus !== 401 || !e.data?.session) throw e;
    return tmp.registerRequest({ ...req, auth: { type: "m.login.dummy", session: e.data.session } });
  }
}

async function login(userId) {
  const tmp = sdk.createClient({ baseUrl });
  return tmp.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password });
}

// start runs a client with an in-memory Rust crypto store until it has
// synced once; it records the bodies it decrypts.
async function start(creds) {
  const client = sdk.createClient({
    baseUrl, userId: creds.user_id, accessToken: creds.access_token, deviceId: creds.device_id,
  });
  await client.initRustCrypto({ useIndexedDB: false });
  client.decrypted = new Set();
  client.on(sdk.MatrixEventEvent.Decrypted, (ev) => {
    if (!ev.isDecryptionFailure() && ev.getType() === "m.room.message") client.decrypted.add(ev.getContent().body);
  });
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(new Error("sync failed"));
    });
  });
  client.startClient({ initialSyncLimit: 20 });
  started.push(client);
  await prepared;
  return client;
}

function joined(client, roomId, userId) {
  return client.getRoom(roomId)?.getMember(userId)?.membership === "join";
}

async function knowsDevice(client, userId, deviceId) {
  const devices = await client.getCrypto().getUserDeviceInfo([userId], true);
  return devices.get(userId)?.has(deviceId) ?? false;
}

// UIA for device_signing/upload: try without auth (the first upload needs
// none), then with the password.
function uia(userId) {
  return async (makeRequest) => {
    try {
      await makeRequest(null);
    } catch (e) {
      if (e.httpStatus !== 401) throw e;
      await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password, session: e.data?.session });
    }
  };
}

test("encrypted messages, a second device, cross-signing and key backup", async (t) => {
  assert.ok(baseUrl, "CHATALOT_URL must be set");
  const s = suffix();
  const aliceCreds = await register(`jsalice${s}`);
  const bobCreds = await register(`jsbob${s}`);
  const alice = await start(aliceCreds);
  const bob = await start(bobCreds);
  const aliceId = aliceCreds.user_id;
  const bobId = bobCreds.user_id;

  const { room_id: roomId } = await alice.createRoom({
    preset: "private_chat",
    invite: [bobId],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  await waitFor("bob is invited", [bob], () => bob.getRoom(roomId) !== null);
  await bob.joinRoom(roomId);
  await waitFor("alice sees bob join", [alice], () => joined(alice, roomId, bobId));

  await t.test("encrypted messages both ways", async () => {
    const toBob = body("js secret for bob");
    await alice.sendTextMessage(roomId, toBob);
    await waitFor("bob decrypts", [bob], () => bob.decrypted.has(toBob));
    const toAlice = body("js secret for alice");
    await bob.sendTextMessage(roomId, toAlice);
    await waitFor("alice decrypts", [alice], () => alice.decrypted.has(toAlice));
  });

  await t.test("a second device of bob receives the room key", async () => {
    const bob2Creds = await login(bobId);
    const bob2 = await start(bob2Creds);
    await waitFor("alice learns bob's new device", [alice], () => knowsDevice(alice, bobId, bob2Creds.device_id));
    const msg = body("js secret for both of bob's devices");
    await alice.sendTextMessage(roomId, msg);
    await waitFor("bob's second device decrypts", [bob2], () => bob2.decrypted.has(msg));
    await waitFor("bob's first device decrypts", [bob], () => bob.decrypted.has(msg));
  });

  await t.test("cross-signing: bob sees alice's device signed by her identity", async () => {
    await alice.getCrypto().bootstrapCrossSigning({ authUploadDeviceSigningKeys: uia(aliceId) });
    await waitFor("alice's own device is cross-signed", [alice], async () =>
      (await alice.getCrypto().getDeviceVerificationStatus(aliceId, aliceCreds.device_id))?.signedByOwner === true);
    await waitFor("bob sees alice's device cross-signed", [bob], async () =>
      (await bob.getCrypto().getDeviceVerificationStatus(aliceId, aliceCreds.device_id))?.signedByOwner === true);
    const identity = await bob.getCrypto().getUserVerificationStatus(aliceId);
    assert.equal(identity.isCrossSigningVerified(), false, "bob has not verified alice");
  });

  await t.test("key backup: a fresh device restores and decrypts an old message", async () => {
    const old = body("js secret from before the fresh device");
    const { event_id: eventId } = await bob.sendTextMessage(roomId, old);
    await waitFor("alice decrypts the old message", [alice], () => alice.decrypted.has(old));
    await alice.getCrypto().resetKeyBackup();
    const info = await alice.getCrypto().getKeyBackupInfo();
    assert.ok(info?.version, "a backup version exists");
    await waitFor("alice's keys are backed up", [alice], async () => {
      const v = await alice.http.authedRequest("GET", "/room_keys/version");
      return v?.count > 0 && (await alice.getCrypto().getActiveSessionBackupVersion()) === info.version;
    });
    // The backup uploads in the background: wait until the server has the
    // session of the old message.
    const raw = await alice.fetchRoomEvent(roomId, eventId);
    const sessionId = raw.content.session_id;
    await waitFor("the old message's session is in the backup", [alice], async () => {
      try {
        await alice.http.authedRequest("GET", `/room_keys/keys/${encodeURIComponent(roomId)}/${encodeURIComponent(sessionId)}`, { version: info.version });
        return true;
      } catch {
        return false;
      }
    });
    const key = await alice.getCrypto().getSessionBackupPrivateKey();
    assert.ok(key, "alice holds the backup key");

    const fresh = await start(await login(aliceId));
    await fresh.getCrypto().storeSessionBackupPrivateKey(key, info.version);
    const restored = await fresh.getCrypto().restoreKeyBackup();
    assert.ok(restored.imported > 0, "keys were restored");
    const ev = new sdk.MatrixEvent(await fresh.fetchRoomEvent(roomId, eventId));
    await fresh.decryptEventIfNeeded(ev);
    assert.equal(ev.isDecryptionFailure(), false, "the old message decrypts");
    assert.equal(ev.getContent().body, old);
  });
});
