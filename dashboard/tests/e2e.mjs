// The dashboard end to end, in Debian's Chromium driven by playwright-core, against a real
// `picloud serve` (crates/picloud/tests/dashboard.rs starts it and runs this script).
// Environment: BASE_URL, TOKEN (admin), TENANT (exists), SCREENSHOTS (a directory).
// Exits non-zero, saying which step failed, on the first failed expectation.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const { BASE_URL, TOKEN, TENANT, SCREENSHOTS } = process.env;
if (!BASE_URL || !TOKEN || !TENANT || !SCREENSHOTS) throw new Error('BASE_URL, TOKEN, TENANT, SCREENSHOTS');
mkdirSync(SCREENSHOTS, { recursive: true });
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

function expect(ok, what) {
	if (!ok) throw new Error(`expected: ${what}`);
	console.log(`ok - ${what}`);
}

/** Polls `check` (async, returns [ok, detail]) for `seconds` (5): the page may still be rendering
 * (CodeMirror updates parts of its DOM on the next animation frame). */
async function eventually(check, what, seconds = 5) {
	let detail = '';
	for (let i = 0; i < seconds * 10; i++) {
		const [ok, d] = await check();
		detail = d;
		if (ok) return expect(true, what);
		await new Promise((r) => setTimeout(r, 100));
	}
	expect(false, `${what}: ${detail}`);
}

const browser = await chromium.launch({
	executablePath,
	headless: true,
	args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking']
});
const failures = [];
try {
	for (const width of [1280, 360]) {
		const page = await browser.newPage({ viewport: { width, height: 900 } });
		await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(BASE_URL).origin });
		page.setDefaultTimeout(15000);
		page.on('pageerror', (e) => failures.push(`page error: ${e.message}`));
		// Any console error fails the run, but the browser's own line for an HTTP error answer:
		// the test provokes refusals (422, 409) on purpose, and the page shows each one.
		page.on('console', (m) => {
			if (m.type() === 'error' && !m.text().startsWith('Failed to load resource: the server responded with a status of'))
				failures.push(`console error at ${width} px: ${m.text()}`);
		});
		// Each page shot is also checked to fit its width: wide tables scroll inside their box,
		// the page itself never grows sideways (at 360 px the Schedules page once was 575 px).
		const shot = async (name) => {
			const wide = await page.evaluate(() => document.documentElement.scrollWidth);
			expect(wide <= width, `${name} fits in ${width} px (${wide} px wide)`);
			await page.screenshot({ path: `${SCREENSHOTS}/${name}-${width}.png`, fullPage: true });
		};
		const name = `e2e-${width}`;

		// Log in: the token goes to sessionStorage, never into the URL.
		await page.goto(BASE_URL + '/');
		await shot('login');
		await page.getByLabel('API token').fill(TOKEN);
		await page.getByRole('button', { name: 'Log in' }).click();
		await page.getByRole('heading', { name: 'Functions' }).waitFor();
		expect(!page.url().includes(TOKEN), 'the token is not in the URL');
		expect((await page.evaluate(() => sessionStorage.getItem('picloud.token'))) === TOKEN, 'the token is in sessionStorage');

		// The server starts with no tenant (tests/dashboard.rs): the first run meets what a
		// newcomer meets, a pointer to making one instead of an empty picker, and follows it.
		if (width === 1280) {
			await page.getByText('No tenant yet').waitFor();
			await page.waitForTimeout(200);
			const pointers = await page.getByText(/no tenants? yet/i).allTextContents();
			expect((await page.getByLabel('Tenant').count()) === 0 && pointers.length === 1, `no empty tenant picker, and the pointer said once: ${JSON.stringify(pointers)}`);
			await shot('functions-empty');
			await page.getByRole('link', { name: 'Create the first one' }).click();
			await page.getByLabel('New tenant').fill(TENANT);
			await page.getByRole('button', { name: 'Create' }).click();
			await page.getByRole('cell', { name: TENANT, exact: true }).waitFor();
			await page.getByRole('link', { name: 'Functions' }).first().click();
			await page.getByRole('heading', { name: 'Functions' }).waitFor();
			expect(true, 'the first tenant is made from the dashboard');
		}

		// Create a function: the function page opens.
		await page.getByLabel('Tenant').selectOption(TENANT);
		await page.getByLabel('New function').fill(name);
		await page.getByRole('button', { name: 'Create' }).click();
		await page.getByRole('heading', { name }).waitFor();
		await shot('functions-new');

		// Type a script, badly laid out.
		const editor = page.getByRole('textbox', { name: 'Script' });
		await editor.click();
		await page.keyboard.press('Control+a');
		await page.keyboard.press('Delete');
		const messy = 'fn handle(req){let n=req.query.name??"world";#{greeting:`hello ${n}`,size:n.len()}}';
		await editor.pressSequentially(messy, { delay: 0 });
		const text = () => page.evaluate(() => document.querySelector('.cm-content')?.cmView?.view?.state.doc.toString() ?? [...document.querySelectorAll('.cm-line')].map((l) => l.textContent).join('\n'));
		await eventually(async () => [(await text()).includes('fn handle(req){let n='), await text()], 'the typed script is in the editor');

		// Format, valid: the document is replaced by the formatted script.
		await page.getByRole('button', { name: 'Format' }).first().click();
		await page.getByText('Formatted.').waitFor();
		await eventually(async () => {
			const t = await text();
			return [t.startsWith('fn handle(req) {') && t.includes('let n = req.query.name ?? "world";'), JSON.stringify(t)];
		}, 'the document is formatted');
		const formatted = await text();
		// Undo takes the whole Format back in one step.
		await editor.click();
		await page.keyboard.press('Control+z');
		await eventually(async () => [(await text()).includes('fn handle(req){let n='), await text()], 'one undo restores the unformatted script');
		await page.keyboard.press('Control+y');
		await eventually(async () => [(await text()) === formatted, await text()], 'redo formats it again');

		// Format, invalid: a banner with line and column, the document untouched, the cursor moved.
		await page.keyboard.press('Control+End');
		await page.keyboard.type('\nlet broken = ;');
		await eventually(async () => [(await text()).endsWith('let broken = ;'), await text()], 'the broken line is typed');
		const invalid = await text();
		// The lint marks it while typing pauses, from the same parse Format uses.
		await eventually(async () => {
			const marks = await page.locator('.cm-lint-error').allTextContents();
			const title = (await page.locator('.cm-lint-marker').first().getAttribute('title').catch(() => null)) ?? '';
			const words = (await page.getByLabel('Problem in the script').textContent().catch(() => null)) ?? '';
			return [marks.length === 1 && marks[0].includes(';') && title.length > 0 && /line \d+, column \d+: /.test(words), `${JSON.stringify(marks)} / ${title} / ${words}`];
		}, 'the lint underlines the problem, marks its line and says what it is');
		await page.keyboard.press('Shift+Alt+F');
		const banner = page.locator('.error.inline');
		await banner.waitFor();
		const said = await banner.textContent();
		expect(/line \d+, column \d+/.test(said ?? ''), `the banner gives line and column: ${said}`);
		await page.waitForTimeout(200);
		expect((await text()) === invalid, 'the document stays as it was');
		await eventually(async () => {
			const line = await page.evaluate(() => document.querySelector('.cm-activeLine')?.textContent);
			return [!!line?.includes('let broken'), line];
		}, "the cursor is on the error's line");
		await shot('edit-format-error');

		// Take the broken line out again, save and deploy (Ctrl-S saves).
		await page.keyboard.press('Control+z');
		await page.keyboard.press('Control+z');
		await eventually(async () => {
			const n = (await page.locator('.cm-lint-error').count()) + (await page.locator('.cm-lint-marker').count());
			return [n === 0 && (await page.getByLabel('Problem in the script').count()) === 0, `${n} lint marks`];
		}, 'the lint marks go once the script parses');
		await page.getByRole('button', { name: 'Format' }).first().click();
		await page.getByText('Formatted.').waitFor();
		await page.keyboard.press('Control+s');
		await page.getByText(/Saved version 1\./).waitFor();
		await page.getByRole('button', { name: 'Deploy' }).click();
		await page.getByText(/Version 1 is live\./).waitFor();
		const live = await fetch(`${BASE_URL}/fn/${TENANT}/${name}?name=pi`).then((r) => r.text());
		expect(live.includes('hello pi'), `the endpoint answers: ${live}`);
		// The endpoint is a full link, copied as a URL or as a curl command that works.
		const endpointLink = page.locator('a.endpoint');
		const endpointUrl = (await endpointLink.getAttribute('href')) ?? '';
		expect(/^http:\/\/.+\/.*e2e-/.test(endpointUrl), `the endpoint is a full URL: ${endpointUrl}`);
		await page.getByRole('button', { name: 'Copy as curl' }).click();
		await page.getByText('The curl command copied.').waitFor();
		const curlCommand = await page.evaluate(() => navigator.clipboard.readText());
		expect(curlCommand === `curl '${endpointUrl}'`, `curl for a public function: ${curlCommand}`);
		await page.getByRole('button', { name: 'Copy URL' }).click();
		await page.getByText('The URL copied.').waitFor();
		expect((await page.evaluate(() => navigator.clipboard.readText())) === endpointUrl, 'the URL is on the clipboard');
		await shot('edit');

		// Test tab: JSON Format, valid then invalid; Send.
		await page.getByRole('tab', { name: 'Test' }).click();
		const body = page.getByLabel('Body (JSON)');
		await body.fill('{"a":1,"b":[1,2]}');
		await page.getByRole('button', { name: 'Format JSON' }).click();
		expect((await body.inputValue()) === '{\n\t"a": 1,\n\t"b": [\n\t\t1,\n\t\t2\n\t]\n}', 'the JSON body is formatted');
		await body.fill('{"a":1,,}');
		await page.getByRole('button', { name: 'Format JSON' }).click();
		const jsonBanner = page.locator('[aria-label="Test"] .error.inline');
		await jsonBanner.waitFor();
		expect(/line 1, column \d+/.test((await jsonBanner.textContent()) ?? ''), 'the JSON banner gives line and column');
		expect((await body.inputValue()) === '{"a":1,,}', 'the invalid body stays as it was');
		await body.fill('');
		await page.getByLabel('Query').fill('name=tester');
		await page.getByRole('button', { name: 'Send' }).click();
		const result = page.getByLabel('Result');
		await result.waitFor();
		const shown = (await result.textContent()) ?? '';
		expect(shown.includes('status 200') && shown.includes('hello tester') && shown.includes('fuel'), `the result: ${shown.slice(0, 200)}`);
		expect(shown.includes("Ran the editor's text"), `the result says what ran: ${shown.slice(0, 120)}`);
		await shot('test');
		// The live version instead, on request.
		await page.getByLabel(/the live version/).check();
		await page.getByRole('button', { name: 'Send' }).click();
		await eventually(async () => {
			const t = (await result.textContent()) ?? '';
			return [t.includes('Ran live version 1') && t.includes('hello tester'), t.slice(0, 120)];
		}, 'the live version runs when chosen');
		await page.getByLabel(/the editor's text/).check();
		// A body that looks like JSON and is not is refused before sending, saying where.
		await body.fill('{"a":');
		await page.getByRole('button', { name: 'Send' }).click();
		await jsonBanner.waitFor();
		const refusedBody = (await jsonBanner.textContent()) ?? '';
		expect(refusedBody.includes('not valid JSON') && (refusedBody.match(/position|line \d+/g) ?? []).length === 1, `the body is refused, its place said once: ${refusedBody}`);
		await body.fill('');

		// Logs: the endpoint call and the test-invoke are recorded; the live tail shows a new one.
		await page.getByRole('tab', { name: 'Logs' }).click();
		const rows = page.getByRole('table', { name: 'Invocations' }).locator('tbody tr');
		for (let i = 0; i < 50 && !((await rows.allTextContents()).some((t) => t.includes('http'))); i++) {
			await page.waitForTimeout(200);
			await page.getByRole('button', { name: 'Refresh' }).click();
		}
		const logged = (await rows.allTextContents()).join('\n');
		expect(logged.includes('http') && logged.includes('test') && logged.includes('ok'), `the records: ${logged.slice(0, 300)}`);
		await page.getByRole('button', { name: 'Live tail' }).click();
		await page.getByRole('button', { name: 'Stop live tail' }).waitFor();
		const before = await rows.count();
		await page.waitForTimeout(300);
		await fetch(`${BASE_URL}/fn/${TENANT}/${name}?name=live`);
		for (let i = 0; i < 50 && (await rows.count()) <= before; i++) await page.waitForTimeout(100);
		expect((await rows.count()) > before, 'the live tail shows the new invocation');
		await shot('logs');
		await page.getByRole('button', { name: 'Stop live tail' }).click();
		// Each row says what it answered, with its date, and opens into the whole invocation.
		const newest = rows.first();
		const newestText = (await newest.textContent()) ?? '';
		expect(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/.test(newestText) && newestText.includes('GET /?name=live'), `the newest row: ${newestText.slice(0, 200)}`);
		await newest.getByRole('button').click();
		const detail = page.locator('[aria-label="Invocations"] .detail dl');
		await detail.waitFor();
		const details = (await detail.textContent()) ?? '';
		expect(details.includes('GET /?name=live') && details.includes('Headers') && details.includes('fuel') && details.includes('MiB'), `the invocation's detail: ${details.slice(0, 300)}`);
		await shot('logs-detail');
		await newest.getByRole('button').click();
		await detail.waitFor({ state: 'detached' });

		// Metrics: the last hour from the records (the endpoint was called twice so far).
		await page.getByRole('tab', { name: 'Metrics' }).click();
		const summary = page.getByLabel('Summary');
		await summary.waitFor();
		let seen = '';
		for (let i = 0; i < 50; i++) {
			seen = (await summary.textContent()) ?? '';
			if (/Invocations\s*2\b/.test(seen)) break;
			await page.waitForTimeout(200);
			await page.getByRole('tabpanel', { name: 'Metrics' }).getByRole('button', { name: 'Refresh' }).click();
		}
		expect(/Invocations\s*2\b/.test(seen), `the metrics count the endpoint's calls: ${seen}`);
		expect((await page.getByRole('img', { name: 'Latency' }).count()) === 1, 'a latency chart');
		expect(((await page.getByRole('table', { name: 'Outcomes' }).textContent()) ?? '').includes('ok'), 'outcomes listed');
		const tooltip = (await page.locator('[aria-label="Latency"] circle title').first().textContent()) ?? '';
		expect(/^p50: [\d.]+ ms at /.test(tooltip), `a point's tooltip: ${tooltip}`);
		await shot('metrics');
		// Another window: the last day, in half hours.
		await page.getByLabel('Last', { exact: true }).and(page.locator('#m-window')).selectOption('1440');
		await eventually(async () => {
			const label = (await page.locator('figure').filter({ has: page.getByRole('img', { name: 'Rate' }) }).textContent()) ?? '';
			const t = (await summary.textContent()) ?? '';
			return [label.includes('−24 h') && /Invocations\s*2\b/.test(t), `${label} / ${t}`];
		}, 'the day window draws the same invocations');
		// An outcome's count opens Logs filtered to it, in the same window.
		await page.getByRole('table', { name: 'Outcomes' }).getByRole('row').filter({ hasText: 'ok' }).getByRole('button').click();
		await eventually(async () => {
			const o = await page.locator('#l-outcome').inputValue();
			const w = await page.locator('#l-since').inputValue();
			const shownRows = (await rows.allTextContents()).join('\n');
			return [o === 'ok' && w === '1440' && shownRows.includes('ok') && !shownRows.includes('No invocations'), `${o} ${w} ${shownRows.slice(0, 100)}`];
		}, "an outcome's count opens Logs filtered to it");
		// The error count opens Logs on every outcome but ok (none here).
		await page.getByRole('tab', { name: 'Metrics' }).click();
		await page.getByRole('term').filter({ hasText: 'Errors' }).locator('xpath=..').getByRole('button').click();
		await eventually(async () => {
			const o = await page.locator('#l-outcome').inputValue();
			const shownRows = (await rows.allTextContents()).join('\n');
			return [o === 'error' && shownRows.includes('No invocations'), `${o} ${shownRows.slice(0, 100)}`];
		}, 'the error count opens Logs on the errors');
		// Chart labels keep a readable size on a narrow screen.
		await page.getByRole('tab', { name: 'Metrics' }).click();
		const axisSize = await page.locator('figure .axis span').first().evaluate((el) => parseFloat(getComputedStyle(el).fontSize));
		expect(axisSize >= 11, `chart labels at ${width} px are ${axisSize} px`);
		await page.getByRole('tab', { name: 'Logs' }).click();
		await page.locator('#l-outcome').selectOption('');

		// Schedules: the live version has no on_schedule, so adding one is refused, clearly.
		await page.getByRole('tab', { name: 'Schedules' }).click();
		await page.getByLabel('Cron (5–7 fields or @daily, @hourly, …)').fill('@daily');
		await page.getByRole('button', { name: 'Add schedule' }).click();
		const refusal = page.locator('[aria-label="Schedules"] .error.inline');
		await refusal.waitFor();
		expect(((await refusal.textContent()) ?? '').includes('on_schedule'), `the refusal says why: ${await refusal.textContent()}`);
		await shot('schedules');

		// Settings: a variable and a secret; token-protected, then public again.
		await page.getByRole('tab', { name: 'Settings' }).click();
		const settings = page.getByRole('tabpanel', { name: 'Settings' });
		await settings.getByLabel('Name').fill('GREETING');
		await settings.getByLabel('Value').fill('hi');
		await settings.getByRole('button', { name: 'Set variable' }).click();
		await settings.getByRole('cell', { name: 'GREETING', exact: true }).waitFor();
		await settings.getByLabel('Name').fill('API_KEY');
		await settings.getByLabel('Value').fill('s3cret');
		await settings.getByLabel(/Secret/).check();
		await settings.getByRole('button', { name: 'Set variable' }).click();
		await settings.getByRole('cell', { name: 'API_KEY', exact: true }).waitFor();
		const vars = (await settings.getByRole('table', { name: 'Variables' }).textContent()) ?? '';
		expect(vars.includes('hi') && vars.includes('(secret)') && !vars.includes('s3cret'), `variables: ${vars}`);
		// Limits in units: "32MB" is refused (nothing saved), 32 is 32 MiB; one message at a time.
		const memory = settings.getByLabel('Memory (MiB)');
		expect(((await memory.getAttribute('placeholder')) ?? '').includes('64 MiB'), `the default in MiB: ${await memory.getAttribute('placeholder')}`);
		await memory.fill('32MB');
		await settings.getByRole('button', { name: 'Save settings' }).click();
		const settingsBanner = settings.locator('.error.inline');
		await settingsBanner.waitFor();
		expect(((await settingsBanner.textContent()) ?? '').includes('not a whole number of MiB'), `the refusal: ${await settingsBanner.textContent()}`);
		const unchanged = await fetch(`${BASE_URL}/api/v1/tenants/${TENANT}/functions/${name}`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.json());
		expect(unchanged.chosen_limits.memory_bytes === null, 'nothing was saved');
		await memory.fill('32');
		await settings.getByRole('button', { name: 'Save settings' }).click();
		await settings.getByText('Settings saved.').waitFor();
		expect((await settingsBanner.count()) === 0, 'the old error is gone with the new success');
		const saved = await fetch(`${BASE_URL}/api/v1/tenants/${TENANT}/functions/${name}`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.json());
		expect(saved.chosen_limits.memory_bytes === 32 * 1048576, `32 MiB saved: ${saved.chosen_limits.memory_bytes}`);
		// Removing a secret asks, saying it cannot be recovered.
		let removal = '';
		page.once('dialog', (d) => ((removal = d.message()), d.accept()));
		await settings.getByRole('button', { name: 'Remove API_KEY' }).click();
		await settings.getByText('API_KEY removed.').waitFor();
		expect(removal.includes('cannot be recovered'), `the removal asks: ${removal}`);
		await settings.getByLabel(/Public \(anyone/).uncheck();
		await settings.getByRole('button', { name: 'Save settings' }).click();
		await settings.getByText('Settings saved.').waitFor();
		const hidden = await fetch(`${BASE_URL}/fn/${TENANT}/${name}`).then((r) => r.status);
		expect(hidden === 401 || hidden === 404, `a token-protected endpoint refuses anonymous callers: ${hidden}`);
		await shot('settings');
		await settings.getByLabel(/Public \(anyone/).check();
		await settings.getByRole('button', { name: 'Save settings' }).click();
		await page.waitForTimeout(200);
		const open = await fetch(`${BASE_URL}/fn/${TENANT}/${name}`).then((r) => r.status);
		expect(open === 200, `public again: ${open}`);

		// A second version and a rollback.
		await page.getByRole('tab', { name: 'Edit' }).click();
		await editor.click();
		await page.keyboard.press('Control+End');
		await page.keyboard.type('\n// version two');
		await page.getByRole('button', { name: 'Deploy' }).click();
		await page.getByText(/Version 2 is live\./).waitFor();
		// The diff from version 1 to the editor (version 2).
		await page.getByRole('row').filter({ hasText: /^1/ }).getByRole('button', { name: 'Diff' }).click();
		const diffShown = (await page.getByLabel('Diff').textContent()) ?? '';
		expect(diffShown.includes('+ // version two') && diffShown.includes('  fn handle(req) {'), `the diff: ${diffShown}`);
		// Rollback names its target and asks first.
		let asked = '';
		page.once('dialog', (d) => ((asked = d.message()), d.accept()));
		await page.getByRole('button', { name: 'Rollback to v1' }).click();
		await page.getByText(/Rolled back to version 1\./).waitFor();
		expect(asked.includes('version 1') && asked.includes('Version 2 stops serving'), `the rollback asks, naming its target: ${asked}`);
		await eventually(async () => [!(await text()).includes('version two'), await text()], 'the editor shows version 1 again');

		// Typing indents a level after an opening bracket, closes brackets, and blocks fold.
		await editor.click();
		await page.keyboard.press('Control+a');
		await page.keyboard.press('Delete');
		await editor.pressSequentially('fn f() {', { delay: 0 });
		await page.keyboard.press('Enter');
		await eventually(async () => [(await text()) === 'fn f() {\n\t\n}', JSON.stringify(await text())], 'Enter after { indents a level, and the bracket is closed');
		await page.keyboard.type('let x = [');
		await eventually(async () => [(await text()) === 'fn f() {\n\tlet x = []\n}', JSON.stringify(await text())], 'an opened [ is closed');
		await eventually(async () => {
			const n = await page.locator('.cm-foldGutter [title="Fold line"]').count();
			return [n >= 1, `${n} fold markers`];
		}, 'a block can be folded');
		await page.locator('.cm-foldGutter [title="Fold line"]').first().click();
		await eventually(async () => [(await page.locator('.cm-foldPlaceholder').count()) === 1, 'no placeholder'], 'folding hides the block');

		// An unsaved edit is marked, runs in Test, and an error's line leads back to the editor.
		await editor.click();
		await page.keyboard.press('Control+a');
		await page.keyboard.press('Delete');
		await editor.pressSequentially('fn handle(req) { throw "boom" }', { delay: 0 });
		await eventually(async () => {
			const label = (await page.getByRole('tab', { name: /Edit/ }).textContent()) ?? '';
			return [label.includes('●') && (await page.title()).startsWith('●'), `${label} / ${await page.title()}`];
		}, 'unsaved changes are marked on the tab and in the title');
		await page.getByRole('tab', { name: 'Test' }).click();
		await page.getByRole('button', { name: 'Send' }).click();
		const errorLink = page.getByRole('button', { name: /line 1, column \d+/ });
		await errorLink.waitFor();
		expect(((await result.textContent()) ?? '').includes('script_error'), 'the unsaved script ran and failed');
		await errorLink.click();
		await page.locator('.cm-error-line').waitFor();
		expect((await page.locator('.cm-error-marker').count()) === 1, "the error's line is marked in the gutter");
		await shot('edit-error-line');
		await page.keyboard.press('End');
		await page.keyboard.type(' ');
		await page.locator('.cm-error-line').waitFor({ state: 'detached' });
		expect(true, 'the mark goes once the line changes');
		// Schedules: with a version that has on_schedule (deployed through the API), a schedule
		// shows its next run in its own zone, its payload, runs now on request, and its history.
		const deployed = await fetch(`${BASE_URL}/api/v1/tenants/${TENANT}/functions/${name}/versions`, {
			method: 'POST',
			headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
			body: JSON.stringify({ source: 'fn handle(req) { "hi" }\nfn on_schedule(event) { print(`tick ${event.payload.report}`); }\n', deploy: true })
		});
		expect(deployed.status === 201, `a version with on_schedule: ${deployed.status}`);
		await page.getByRole('tab', { name: 'Schedules' }).click();
		await page.getByLabel('Cron (5–7 fields or @daily, @hourly, …)').fill('30 2 * * *');
		await page.getByLabel('Time zone').fill('Europe/Berlin');
		await page.getByLabel('Payload (JSON, optional)').fill('{"report":"daily"}');
		await page.getByRole('button', { name: 'Add schedule' }).click();
		const scheduleRow = page.getByRole('table', { name: 'Schedules' }).locator('tbody tr').first();
		await eventually(async () => {
			const t = (await scheduleRow.textContent()) ?? '';
			return [/02:30:00 Europe\/Berlin/.test(t) && t.includes('{"report":"daily"}'), t];
		}, 'the next run in the schedule\'s zone, labelled, and the payload');
		await scheduleRow.getByRole('button', { name: 'Run now' }).click();
		await page.getByText(/ran now: ok/).waitFor();
		expect(true, 'Run now runs on_schedule');
		await scheduleRow.getByRole('button', { name: 'Runs' }).click();
		await page.getByText('No ticks have run yet').waitFor();
		expect(true, 'the run history opens (Run now is no tick)');
		await shot('schedules-run');
		// Rolling back to a version without on_schedule would stop the schedule: the dashboard
		// says so, naming it, and does not offer to (the API refuses the same, 409).
		await page.getByRole('tab', { name: /Edit/ }).click();
		const rollbackButton = page.getByRole('button', { name: /^Rollback to v\d+$/ });
		await eventually(async () => [(await rollbackButton.textContent()) === 'Rollback to v2', await rollbackButton.textContent()], 'the Edit tab reads the versions again (v3 came from the API)');
		await eventually(async () => [((await page.locator('.meta').textContent()) ?? '').includes('Version 3 is live'), await page.locator('.meta').textContent()], 'the page says which version is live now');
		let rollbackAsked = '';
		const noRollbackDialog = (d) => ((rollbackAsked = d.message()), d.dismiss());
		page.on('dialog', noRollbackDialog);
		await rollbackButton.click();
		const scheduleId = (await fetch(`${BASE_URL}/api/v1/tenants/${TENANT}/functions/${name}/schedules`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.json()))[0].id;
		const breaks = page.locator('[aria-label="Edit"] .error.inline').filter({ hasText: 'on_schedule' });
		await breaks.waitFor();
		page.off('dialog', noRollbackDialog);
		const breaksText = (await breaks.textContent()) ?? '';
		expect(breaksText.includes('Version 2') && breaksText.includes(`(${scheduleId})`) && rollbackAsked === '', `the rollback is refused before asking, naming the schedule: ${breaksText} / asked: ${rollbackAsked}`);
		const stillLive = await fetch(`${BASE_URL}/api/v1/tenants/${TENANT}/functions/${name}`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.json());
		expect(stillLive.active_version === 3, `version 3 stays live: ${stillLive.active_version}`);
		await shot('edit-rollback-refused');

		// Leaving with unsaved changes asks; staying keeps them.
		page.once('dialog', (d) => d.dismiss());
		await page.getByRole('link', { name: 'Functions' }).first().click();
		await page.waitForTimeout(300);
		expect((await text()).includes('throw "boom"'), 'declining to leave keeps the edit');
		page.once('dialog', (d) => d.accept());

		// The functions list shows it.
		await page.getByRole('link', { name: 'Functions' }).first().click();
		await page.getByRole('link', { name }).waitFor();
		const row = page.getByRole('row').filter({ hasText: name });
		// Each row's figures arrive with a request of their own; on a loaded machine, late.
		await eventually(async () => {
			const t = (await row.textContent()) ?? '';
			return [/\d+(\.\d+)? \/ \d/.test(t), t];
		}, 'the list shows p50/p99', 20);
		await shot('functions');

		// Tenants (admin) and tokens: a token is shown once, then listed by name.
		await page.getByRole('link', { name: 'Tenants' }).click();
		await page.getByRole('cell', { name: TENANT, exact: true }).waitFor();
		await shot('tenants');
		await page.getByRole('link', { name: 'Tokens' }).click();
		await page.getByLabel('New token').fill(`ci-${width}`);
		await page.getByRole('button', { name: 'Create' }).click();
		const newToken = await page.getByRole('status').filter({ hasText: 'shown this once' }).textContent();
		expect(/pc_[A-Za-z0-9_]+/.test(newToken ?? '') && (newToken ?? '').includes('admin rights'), `a new admin token is shown once, saying what it is: ${newToken}`);
		await page.getByRole('cell', { name: `ci-${width}`, exact: true }).waitFor();
		// An admin makes a tenant's token by choosing the tenant; Copy puts it on the clipboard.
		await page.getByLabel('Tokens of').selectOption(`tenant ${TENANT}`);
		await page.getByLabel('New token').fill(`app-${width}`);
		await page.getByRole('button', { name: 'Create' }).click();
		const tenantToken = (await page.getByRole('status').filter({ hasText: 'shown this once' }).textContent()) ?? '';
		expect(tenantToken.includes(`of tenant ${TENANT}`) && tenantToken.includes('never be shown again'), `a tenant's token, with its warning: ${tenantToken}`);
		const secret = /pc_[A-Za-z0-9_]+/.exec(tenantToken)?.[0] ?? '';
		const whoami = await fetch(`${BASE_URL}/api/v1/whoami`, { headers: { authorization: `Bearer ${secret}` } }).then((r) => r.json());
		expect(whoami.tenant === TENANT && whoami.admin === false, `the token is the tenant's: ${JSON.stringify(whoami)}`);
		await page.getByRole('button', { name: 'Copy', exact: true }).click();
		await page.getByText('Copied.').waitFor();
		expect((await page.evaluate(() => navigator.clipboard.readText())) === secret, 'the token is on the clipboard');
		// A name the server would refuse is refused by the browser first (its pattern is valid).
		await page.getByLabel('New token').fill('Bad Name');
		expect(!(await page.getByLabel('New token').evaluate((el) => el.checkValidity())), 'the name field checks its pattern');
		await shot('tokens');
		// A misspelt function's page says so once, with no editor to type into.
		await page.goto(`${BASE_URL}/functions/${TENANT}/no-such-fn-${width}`);
		await page.getByRole('alert').filter({ hasText: 'no such function' }).waitFor();
		await page.waitForTimeout(300);
		const alerts = await page.getByRole('alert').allTextContents();
		expect(alerts.length === 1 && (await page.locator('.cm-editor').count()) === 0, `one message and no editor: ${JSON.stringify(alerts)}`);
		await page.close();
	}
} catch (e) {
	// What the pages threw before this step failed is often why it failed.
	if (failures.length) console.error(failures.join('\n'));
	throw e;
} finally {
	await browser.close();
}
if (failures.length) {
	console.error(failures.join('\n'));
	process.exit(1);
}
console.log('dashboard: all steps passed');
