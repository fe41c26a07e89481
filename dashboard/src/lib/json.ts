import { errorText } from './api';
// The test panel's JSON Format: the body pretty-printed with tabs, or where it stops parsing.

export type JsonResult = { ok: true; text: string } | { ok: false; message: string; line: number; column: number; offset: number };

export function formatJson(text: string): JsonResult {
	try {
		return { ok: true, text: JSON.stringify(JSON.parse(text), null, '\t') };
	} catch (e) {
		const message = errorText(e);
		// V8 says "... at position N" (and newer ones "(line L column C)"); count from the offset.
		const m = /position (\d+)/.exec(message);
		const offset = m ? Number(m[1]) : text.length;
		const before = text.slice(0, offset);
		const line = before.split('\n').length;
		const column = offset - before.lastIndexOf('\n');
		// The caller says where, once, in lines and columns: the parser's own position goes.
		const bare = message.replace(/\s*at position \d+(\s*\(line \d+ column \d+\))?/, '');
		return { ok: false, message: bare, line, column, offset };
	}
}
