// The bundle budget: the gzipped JS and CSS the first page load fetches (the app shell's
// entry and everything it imports statically, plus the root layout's and page's nodes) must
// stay within 150 KB. Prints the figure; exits 1 past the budget.
import { readFileSync, readdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';

// PICLOUD_BUNDLE_BUDGET_KB lowers it (the test that proves the check can fail).
const BUDGET = Number(process.env.PICLOUD_BUNDLE_BUDGET_KB ?? 150) * 1024;
const out = 'build';
const shell = readFileSync(join(out, '200.html'), 'utf8');
const manifestPath = '.svelte-kit/output/client/.vite/manifest.json';
const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));

// The files the shell references directly.
const roots = [...shell.matchAll(/(?:href|src)="\/?(_app\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]);
// The entries SvelteKit starts with import the root layout and page nodes (0 and 2) dynamically
// on the first navigation: count them and their static imports too.
const byFile = new Map(Object.values(manifest).map((c) => [`_app/immutable/${c.file.replace(/^_app\/immutable\//, '')}`, c]));
const nodeKeys = Object.keys(manifest).filter((k) => /(\.svelte-kit\/generated\/client-optimized\/nodes\/[02]\.js|generated\/client-optimized\/(app|start)\.js)$/.test(k) || /entry\/(app|start)\.js$/.test(k));
const seen = new Set();
function visit(file) {
	if (seen.has(file)) return;
	seen.add(file);
	const chunk = byFile.get(file);
	if (!chunk) return;
	for (const css of chunk.css ?? []) seen.add(`_app/immutable/${css.replace(/^_app\/immutable\//, '')}`);
	for (const imp of chunk.imports ?? []) {
		const c = manifest[imp];
		if (c) visit(`_app/immutable/${c.file.replace(/^_app\/immutable\//, '')}`);
	}
}
for (const r of roots) visit(r);
for (const k of nodeKeys) visit(`_app/immutable/${manifest[k].file.replace(/^_app\/immutable\//, '')}`);

let total = 0;
const rows = [];
for (const file of [...seen].filter((f) => /\.(js|css)$/.test(f)).sort()) {
	let bytes;
	try {
		bytes = gzipSync(readFileSync(join(out, file)), { level: 9 }).length;
	} catch {
		continue;
	}
	total += bytes;
	rows.push(`${(bytes / 1024).toFixed(1).padStart(7)} KB  ${file}`);
}
console.log(rows.join('\n'));
console.log(`first page load: ${(total / 1024).toFixed(1)} KB gzipped JS + CSS (budget ${BUDGET / 1024} KB)`);
if (total > BUDGET || rows.length === 0) {
	console.error(rows.length === 0 ? 'budget: no files found' : 'budget: over the budget');
	process.exit(1);
}
