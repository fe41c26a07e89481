// Origins in a real browser (crates/picloud/tests/origins.rs starts the server and runs this):
// a function's page never runs with the dashboard's origin nor reads its storage, and cannot
// register a service worker over it. Debian's Chromium, driven by playwright-core, headless.
// Environment: BASE_URL (the dashboard, http://localhost:PORT), TENANT_URL (the tenant's own
// host, http://t1.localhost:PORT), TENANT (its name), TOKEN (admin).
// Exits non-zero, saying which step failed, on the first failed expectation.
import { chromium } from 'playwright-core';

const { BASE_URL, TENANT_URL, TENANT, TOKEN } = process.env;
if (!BASE_URL || !TENANT_URL || !TENANT || !TOKEN) throw new Error('BASE_URL, TENANT_URL, TENANT, TOKEN');
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

function expect(ok, what) {
	if (!ok) throw new Error(`expected: ${what}`);
	console.log(`ok - ${what}`);
}

const browser = await chromium.launch({
	executablePath,
	headless: true,
	args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking']
});
try {
	const page = await browser.newPage();
	page.setDefaultTimeout(15000);

	// The dashboard, logged in: its token in sessionStorage, and a secret and cookies of its
	// origin planted beside it.
	await page.goto(BASE_URL + '/');
	await page.getByLabel('API token').fill(TOKEN);
	await page.getByRole('button', { name: 'Log in' }).click();
	await page.getByRole('heading', { name: 'Functions' }).waitFor();
	await page.evaluate(() => {
		localStorage.setItem('picloud.secret', 'dashboard-secret');
		document.cookie = 'picloud_session=dashboard; path=/';
		document.cookie = 'dashboard_cookie=1; path=/';
	});
	expect((await page.evaluate(() => sessionStorage.getItem('picloud.token'))) === TOKEN, 'the dashboard holds its token');

	// The function's page on its tenant's own host: its script runs, in an origin of its own.
	await page.goto(TENANT_URL + '/page/');
	await page.waitForFunction(() => document.body.dataset.out, null, { timeout: 15000 });
	const own = JSON.parse(await page.evaluate(() => document.body.dataset.out));
	console.log('on the tenant host:', JSON.stringify(own));
	expect(own.origin === TENANT_URL, `the page's origin is the tenant's (${own.origin})`);
	expect(own.session === null, 'it cannot read the dashboard token');
	expect(own.local === null, "it cannot read the dashboard's localStorage");
	expect(!String(own.cookie).includes('dashboard'), "it does not get the dashboard's cookies");
	expect(String(own.sw).startsWith('refused'), `a worker over its whole host is refused (${own.sw})`);

	// The path form on the dashboard's origin: sandboxed, so the same page runs no script.
	const response = await page.goto(BASE_URL + `/fn/${TENANT}/page/`);
	expect((response.headers()['content-security-policy'] ?? '').includes('sandbox'), 'the path form is sandboxed');
	await page.waitForTimeout(1000);
	const ran = await page.evaluate(() => document.body.dataset.out ?? null);
	expect(ran === null, `no script of the function ran on the dashboard's origin (${ran})`);
	// Back on the dashboard: its storage as it was, no service worker over it.
	await page.goto(BASE_URL + '/');
	await page.getByRole('heading', { name: 'Functions' }).waitFor();
	const workers = await page.evaluate(async () => (await navigator.serviceWorker.getRegistrations()).length);
	expect(workers === 0, 'no service worker is registered over the dashboard');
	// Nor can a worker script be fetched from the path form.
	const status = await page.evaluate(
		async (url) => (await fetch(url, { headers: { 'Service-Worker': 'script' } })).status,
		BASE_URL + `/fn/${TENANT}/page/worker.js`
	);
	expect(status === 403, `a worker script from the path form is refused (${status})`);
	expect((await page.evaluate(() => sessionStorage.getItem('picloud.token'))) === TOKEN, 'the dashboard token is untouched');
	console.log('origins: all steps passed');
} finally {
	await browser.close();
}
