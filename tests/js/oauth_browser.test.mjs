// The OAuth 2.0 API's HTML pages in a real browser: Debian's chromium,
// driven headless by playwright-core. matrix-js-sdk's OAuth2 helpers are
// the client; the person signs up or in, allows, and later signs the
// session out on the account page, or approves there the cross-signing
// reset matrix-js-sdk asks for (the m.oauth stage); a client of the legacy
// API signs up through m.login.sso. No page may break its own Content
// Security Policy. tests/oauth_node_test.go starts the server and runs this
// file with CHATALOT_URL and CHROMIUM (the browser's path) set.
import "./polyfill.mjs";
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";

const sdk = await import("matrix-js-sdk");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel("warn");
const { OAuth2 } = sdk;

const baseUrl = process.env.CHATALOT_URL;
// CHATALOT_SCREENSHOTS, when set, is a folder for pictures of the pages
// (the README's).
const shots = process.env.CHATALOT_SCREENSHOTS;
async function shot(page, name) {
  if (shots) await page.screenshot({ path: `${shots}/oauth-${name}.png` });
}
const password = "correct horse battery staple";
const redirectUri = "https://app.example.org/callback";
let browser;

before(async () => {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox"] });
});
after(async () => {
  await browser?.close();
});

// newPage opens a page that records CSP violations and answers the
// client's redirect URI itself (nothing listens at app.example.org).
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 520, height: 640 } });
  const page = await context.newPage();
  const violations = [];
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) violations.push(m.text());
  });
  await page.route("https://app.example.org/**", (route) =>
    route.fulfill({ status: 200, contentType: "text/plain", body: "back in the app" }));
  // The answer is in the fragment, which no request carries: read it from
  // the page's address once the browser is back at the app.
  const called = async () => {
    await page.waitForURL((u) => u.href.startsWith(redirectUri));
    return page.url();
  };
  return { page, context, violations, called };
}

async function startFlow(prompt) {
  const mx = sdk.createClient({ baseUrl });
  const metadata = await mx.getAuthMetadata();
  const clientId = await OAuth2.registerClient(metadata, {
    client_name: "Browser test app",
    client_uri: "https://example.org/",
    redirect_uris: [redirectUri],
    application_type: "web",
  });
  const oauth = new OAuth2(metadata, { clientId });
  const state = randomBytes(8).toString("hex");
  const url = await oauth.generateAuthorizationCodeGrantUrl(state, redirectUri, "fragment", prompt);
  return { oauth, state, url, metadata };
}

async function finish(flow, called) {
  const back = new URL(await called());
  const params = new URLSearchParams(back.hash.slice(1));
  assert.equal(params.get("state"), flow.state);
  const tokens = await flow.oauth.completeAuthorizationCodeGrant(params.get("code"), redirectUri);
  const me = await sdk.createClient({ baseUrl, accessToken: tokens.access_token }).whoami();
  assert.equal(me.device_id, flow.oauth.context.deviceId);
  return { tokens, me };
}

test("sign up, allow, use the session, sign it out on the account page", async () => {
  const name = "web" + randomBytes(4).toString("hex");
  const flow = await startFlow("create");
  const { page, violations, called } = await newPage();

  await page.goto(flow.url);
  assert.match(await page.locator("h1").innerText(), /Create an account/);
  await page.getByLabel("User name").fill(name);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Password again").fill(password);
  await shot(page, "sign-up");
  await page.getByRole("button", { name: "Create account" }).click();

  await page.waitForSelector("text=wants to sign in as");
  assert.match(await page.locator("main").innerText(), new RegExp(`Browser test app wants to sign in as @${name}:`));
  await shot(page, "consent");
  await page.getByRole("button", { name: "Allow" }).click();
  const { tokens, me } = await finish(flow, called);
  assert.match(me.user_id, new RegExp(`^@${name}:`));

  // The account page, deep-linked as a client does to sign out a device.
  const account = `${flow.metadata.account_management_uri}?action=org.matrix.device_delete&device_id=${encodeURIComponent(me.device_id)}`;
  await page.goto(account);
  await page.getByLabel("User name").fill(name);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForSelector(`code:text("${me.device_id}")`);
  await shot(page, "account");
  await page.getByRole("button", { name: "Sign out Browser test app" }).click();
  await page.waitForSelector("h2#sessions");
  assert.doesNotMatch(await page.locator("main").innerText(), new RegExp(me.device_id));
  await assert.rejects(sdk.createClient({ baseUrl, accessToken: tokens.access_token }).whoami(), (e) => e.httpStatus === 401);

  assert.deepEqual(violations, []);
});

test("sign in with a wrong then the right password, cancel, then allow", async () => {
  const name = "web" + randomBytes(4).toString("hex");
  const res = await fetch(`${baseUrl}/_matrix/client/v3/register`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: name, password, auth: { type: "m.login.dummy" }, inhibit_login: true }),
  });
  assert.equal(res.status, 200);

  // Cancel: the app hears access_denied.
  let flow = await startFlow();
  let tab = await newPage();
  await tab.page.goto(flow.url);
  await tab.page.getByLabel("User name").fill(name);
  await tab.page.getByLabel("Password").fill("not the password");
  await tab.page.getByRole("button", { name: "Sign in" }).click();
  await tab.page.waitForSelector("text=The user name or password is wrong.");
  await shot(tab.page, "sign-in");
  await tab.page.getByLabel("User name").fill(name);
  await tab.page.getByLabel("Password").fill(password);
  await tab.page.getByRole("button", { name: "Sign in" }).click();
  await tab.page.getByRole("button", { name: "Cancel" }).click();
  const denied = new URLSearchParams(new URL(await tab.called()).hash.slice(1));
  assert.equal(denied.get("error"), "access_denied");
  assert.equal(denied.get("state"), flow.state);
  assert.deepEqual(tab.violations, []);

  flow = await startFlow();
  tab = await newPage();
  await tab.page.goto(flow.url);
  await tab.page.getByLabel("User name").fill(name);
  await tab.page.getByLabel("Password").fill(password);
  await tab.page.getByRole("button", { name: "Sign in" }).click();
  await tab.page.getByRole("button", { name: "Allow" }).click();
  await finish(flow, tab.called);
  assert.deepEqual(tab.violations, []);
});

test("reset cross-signing: matrix-js-sdk meets m.oauth, the person allows on the account page", async () => {
  const name = "web" + randomBytes(4).toString("hex");
  const res = await fetch(`${baseUrl}/_matrix/client/v3/register`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: name, password, auth: { type: "m.login.dummy" }, inhibit_login: true }),
  });
  assert.equal(res.status, 200);
  const flow = await startFlow();
  const tab = await newPage();
  await tab.page.goto(flow.url);
  await tab.page.getByLabel("User name").fill(name);
  await tab.page.getByLabel("Password").fill(password);
  await tab.page.getByRole("button", { name: "Sign in" }).click();
  await tab.page.getByRole("button", { name: "Allow" }).click();
  const { tokens, me } = await finish(flow, tab.called);

  const mx = sdk.createClient({ baseUrl, userId: me.user_id, deviceId: me.device_id, accessToken: tokens.access_token });
  await mx.initRustCrypto({ useIndexedDB: false });
  const crypto = mx.getCrypto();
  // The first identity needs no authentication.
  await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: async (makeRequest) => { await makeRequest(null); } });
  const first = await crypto.getCrossSigningKeyId();
  assert.ok(first);

  // A new one: the server answers m.oauth with the account page; the
  // person opens it, signs in and allows; the SDK retries with the session.
  let asked;
  await crypto.bootstrapCrossSigning({
    setupNewCrossSigning: true,
    authUploadDeviceSigningKeys: async (makeRequest) => {
      try {
        await makeRequest(null);
        assert.fail("replacing the identity went through without approval");
      } catch (e) {
        if (e.httpStatus !== 401) throw e;
        asked = e.data;
      }
      assert.deepEqual(asked.flows, [{ stages: ["m.oauth"] }]);
      await tab.page.goto(asked.params["m.oauth"].url);
      await tab.page.getByLabel("User name").fill(name);
      await tab.page.getByLabel("Password").fill(password);
      await tab.page.getByRole("button", { name: "Sign in" }).click();
      await tab.page.waitForSelector("h2#reset");
      assert.match(await tab.page.locator("main").innerText(), /Browser test app/);
      await shot(tab.page, "cross-signing-reset");
      await tab.page.getByRole("button", { name: "Allow the reset" }).click();
      await tab.page.waitForSelector("text=Allowed.");
      await makeRequest({ session: asked.session });
    },
  });
  const second = await crypto.getCrossSigningKeyId();
  assert.ok(second && second !== first, "a new master key");
  const stored = await mx.downloadKeysForUsers([me.user_id]);
  assert.ok(Object.keys(stored.master_keys[me.user_id].keys).includes(`ed25519:${second}`));
  assert.deepEqual(tab.violations, []);
  mx.stopClient();
});

test("a client of the legacy API signs up through m.login.sso (OAuth 2.0 aware clients)", async () => {
  const name = "sso" + randomBytes(4).toString("hex");
  const mx = sdk.createClient({ baseUrl });
  const { flows } = await mx.loginFlows();
  const sso = flows.find((f) => f.type === "m.login.sso");
  assert.equal(sso?.oauth_aware_preferred, true);

  const { page, violations } = await newPage();
  const back = `${redirectUri}?from=sso`;
  await page.goto(mx.getSsoLoginUrl(back, "sso", undefined, "register"));
  assert.match(await page.locator("h1").innerText(), /Create an account/);
  await page.getByLabel("User name").fill(name);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Password again").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForSelector("text=wants to sign in as");
  assert.match(await page.locator("main").innerText(), /https:\/\/app\.example\.org/);
  await page.getByRole("button", { name: "Allow" }).click();
  await page.waitForURL((u) => u.href.startsWith(redirectUri));
  const landed = new URL(page.url());
  assert.equal(landed.searchParams.get("from"), "sso");

  const session = await mx.loginWithToken(landed.searchParams.get("loginToken"));
  assert.match(session.user_id, new RegExp(`^@${name}:`));
  const me = await sdk.createClient({ baseUrl, accessToken: session.access_token }).whoami();
  assert.equal(me.user_id, session.user_id);
  assert.deepEqual(violations, []);
});
