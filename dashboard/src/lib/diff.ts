// A line diff (longest common subsequence) between two versions of a script: small scripts,
// so the quadratic table is fine; past 2,000 lines each it gives up rather than freeze the tab.

export type DiffLine = { kind: ' ' | '+' | '-'; text: string };

export function diff(before: string, after: string): DiffLine[] | null {
	const a = before.split('\n');
	const b = after.split('\n');
	if (a.length > 2000 || b.length > 2000) return null;
	const n = a.length;
	const m = b.length;
	const lcs: Uint16Array[] = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
	for (let i = n - 1; i >= 0; i--)
		for (let j = m - 1; j >= 0; j--)
			lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
	const out: DiffLine[] = [];
	let i = 0;
	let j = 0;
	while (i < n && j < m) {
		if (a[i] === b[j]) {
			out.push({ kind: ' ', text: a[i] });
			i++;
			j++;
		} else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push({ kind: '-', text: a[i++] });
		else out.push({ kind: '+', text: b[j++] });
	}
	while (i < n) out.push({ kind: '-', text: a[i++] });
	while (j < m) out.push({ kind: '+', text: b[j++] });
	return out;
}
