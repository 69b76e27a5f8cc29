// Chatalot's own OAuth 2.0 API driven by matrix-js-sdk's OAuth2 helpers:
// discovery, dynamic client registration, the authorisation URL, code
// exchange, refresh with TokenRefresher, and revocation. The browser part
// (sign-in and consent pages) is played with fetch: fill in the forms with
// their hidden CSRF fields and follow the redirects by hand, keeping the
// cookie. tests/oauth_node_test.go starts the server (oauth = true) and runs
// this file with CHATALOT_URL set.
import "./polyfill.mjs";
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel("warn");
const { OAuth2, TokenRefreshLogoutError } = sdk;
const { TokenRefresher } = await import("matrix-js-sdk/lib/oauth/tokenRefresher.js");

const baseUrl = process.env.CHATALOT_URL;
const password = "correct horse battery staple";
const redirectUri = "https://app.example.org/callback";

async function registerUser() {
  const name = "oauth" + randomBytes(4).toString("hex");
  const res = await fetch(`${baseUrl}/_matrix/client/v3/register`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: name, password, auth: { type: "m.login.dummy" }, inhibit_login: true }),
  });
  assert.equal(res.status, 200, await res.text());
  return name;
}

// browserSignIn plays the person: opens the authorisation URL, signs in,
// allows, and returns the URL the server sends the browser back to.
async function browserSignIn(authUrl, user) {
  let cookie = "";
  const go = async (url, form) => {
    const res = await fetch(new URL(url, baseUrl), {
      method: form ? "POST" : "GET",
      redirect: "manual",
      headers: {
        ...(cookie ? { Cookie: cookie } : {}),
        ...(form ? { "Content-Type": "application/x-www-form-urlencoded" } : {}),
      },
      body: form ? new URLSearchParams(form).toString() : undefined,
    });
    const set = res.headers.get("set-cookie");
    if (set) cookie = set.split(";")[0];
    return { status: res.status, location: res.headers.get("location"), page: await res.text(), headers: res.headers };
  };
  const hidden = (page) => Object.fromEntries([...page.matchAll(/name="(request|csrf)" value="([^"]*)"/g)].map((m) => [m[1], m[2]]));

  let r = await go(authUrl);
  assert.equal(r.status, 200, r.page);
  assert.match(r.headers.get("content-security-policy"), /default-src 'none'/);
  assert.doesNotMatch(r.page, /<script/);
  r = await go("/_chatalot/oauth2/auth/sign_in", { ...hidden(r.page), username: user, password });
  assert.equal(r.status, 303, r.page);
  r = await go(r.location);
  assert.equal(r.status, 200, r.page);
  assert.match(r.page, /Chatalot JS test<\/strong> wants to sign in as <strong>@/);
  r = await go("/_chatalot/oauth2/auth/consent", { ...hidden(r.page), decision: "allow" });
  if (r.status === 200) return r.page; // the device flow: nothing to redirect to
  assert.equal(r.status, 303, r.page);
  return r.location;
}

async function login() {
  const user = await registerUser();
  const mx = sdk.createClient({ baseUrl });
  const metadata = await mx.getAuthMetadata();
  assert.equal(metadata.issuer, baseUrl + "/");
  const clientId = await OAuth2.registerClient(metadata, {
    client_name: "Chatalot JS test",
    client_uri: "https://example.org/",
    redirect_uris: [redirectUri],
    application_type: "web",
  });
  const oauth = new OAuth2(metadata, { clientId });
  const state = randomBytes(8).toString("hex");
  const url = await oauth.generateAuthorizationCodeGrantUrl(state, redirectUri, "fragment");
  const back = new URL(await browserSignIn(url, user));
  assert.equal(back.origin + back.pathname, redirectUri);
  const params = new URLSearchParams(back.hash.slice(1));
  assert.equal(params.get("state"), state);
  const tokens = await oauth.completeAuthorizationCodeGrant(params.get("code"), redirectUri);
  assert.equal(tokens.token_type, "Bearer");
  assert.ok(tokens.refresh_token);
  return { oauth, tokens, user };
}

async function whoami(accessToken) {
  const mx = sdk.createClient({ baseUrl, accessToken });
  return mx.whoami();
}

async function unauthorised(accessToken) {
  await assert.rejects(whoami(accessToken), (e) => e.httpStatus === 401 && e.errcode === "M_UNKNOWN_TOKEN");
}

test("code flow, /sync, refresh rotation, replay ends the session", async () => {
  const { oauth, tokens, user } = await login();
  const me = await whoami(tokens.access_token);
  assert.equal(me.device_id, oauth.context.deviceId);
  assert.match(me.user_id, new RegExp(`^@${user}:`));

  // The token works for the client API: a sync, a room.
  const mx = sdk.createClient({ baseUrl, accessToken: tokens.access_token, userId: me.user_id, deviceId: me.device_id });
  const sync = await mx.http.authedRequest("GET", "/sync", { timeout: "0" });
  assert.ok(sync.next_batch);
  const { room_id } = await mx.createRoom({ name: "made with an OAuth token" });
  assert.match(room_id, /^!/);

  // Rotation through the SDK's TokenRefresher.
  const seen = [];
  const refresher = new TokenRefresher(oauth, async (t) => { seen.push(t); });
  const second = await refresher.refreshTokens(tokens.refresh_token);
  assert.notEqual(second.refreshToken, tokens.refresh_token);
  assert.equal(seen.length, 1);
  assert.equal((await whoami(second.accessToken)).device_id, oauth.context.deviceId);
  await unauthorised(tokens.access_token);
  const third = await refresher.refreshTokens(second.refreshToken);
  assert.equal((await whoami(third.accessToken)).device_id, oauth.context.deviceId);

  // The first refresh token is spent: using it is a replay, and the SDK
  // hears a 4xx, which it treats as a logout. The session is gone.
  await assert.rejects(refresher.refreshTokens(tokens.refresh_token), (e) => e instanceof TokenRefreshLogoutError);
  await unauthorised(third.accessToken);
  await assert.rejects(refresher.refreshTokens(third.refreshToken), (e) => e instanceof TokenRefreshLogoutError);
});

test("revocation deletes the device", async () => {
  const { oauth, tokens } = await login();
  await oauth.revokeToken(tokens.access_token, "access_token");
  await unauthorised(tokens.access_token);
  await assert.rejects(oauth.performRefreshTokenGrant(tokens.refresh_token));

  const second = await login();
  await second.oauth.revokeToken(second.tokens.refresh_token, "refresh_token");
  await unauthorised(second.tokens.access_token);
});

test("the SDK refuses nothing of the metadata, and PKCE plain is refused", async () => {
  const mx = sdk.createClient({ baseUrl });
  const metadata = await mx.getAuthMetadata();
  assert.deepEqual(metadata.code_challenge_methods_supported, ["S256"]);
  const clientId = await OAuth2.registerClient(metadata, { client_uri: "https://example.org/", redirect_uris: [redirectUri] });
  const url = new URL(await new OAuth2(metadata, { clientId }).generateAuthorizationCodeGrantUrl("s1", redirectUri));
  url.searchParams.set("code_challenge_method", "plain");
  const res = await fetch(url, { redirect: "manual" });
  assert.equal(res.status, 303);
  const back = new URL(res.headers.get("location"));
  const params = new URLSearchParams(back.hash.slice(1));
  assert.equal(params.get("error"), "invalid_request");
  assert.equal(params.get("state"), "s1");
});

test("device authorisation grant: the SDK polls while the person allows elsewhere", async () => {
  const user = await registerUser();
  const metadata = await sdk.createClient({ baseUrl }).getAuthMetadata();
  assert.ok(metadata.device_authorization_endpoint);
  // registerClient asks for the device grant itself when it is advertised.
  const clientId = await OAuth2.registerClient(metadata, {
    client_name: "Chatalot JS test",
    client_uri: "https://example.org/",
    redirect_uris: [redirectUri],
  });
  const oauth = new OAuth2(metadata, { clientId });
  const session = await oauth.startDeviceAuthorizationGrant();
  assert.match(session.user_code, /^[A-Z]{4}-[A-Z]{4}$/);
  const waiting = oauth.waitForDeviceAuthorizationGrant(session);
  const done = await browserSignIn(session.verification_uri_complete, user);
  assert.match(done, /signing in as @/);
  const tokens = await waiting;
  assert.ok(tokens.access_token, JSON.stringify(tokens));
  assert.equal((await whoami(tokens.access_token)).device_id, oauth.context.deviceId);
});
