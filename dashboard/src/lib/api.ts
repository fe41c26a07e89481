// The management API, same origin. The token lives in sessionStorage only: it goes with every
// call in the Authorization header and never into a URL.

const KEY = 'picloud.token';

export function token(): string | null {
	return sessionStorage.getItem(KEY);
}

export function setToken(value: string | null) {
	if (value) sessionStorage.setItem(KEY, value);
	else sessionStorage.removeItem(KEY);
}

/** An error answer of the API: `{ "error": { kind, message, line?, column? } }`. */
export class ApiError extends Error {
	constructor(
		public status: number,
		public kind: string,
		message: string,
		public line?: number,
		public column?: number
	) {
		super(message);
	}
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
	const headers: Record<string, string> = {};
	const t = token();
	if (t) headers.authorization = `Bearer ${t}`;
	if (body !== undefined) headers['content-type'] = 'application/json';
	const res = await fetch(`/api/v1${path}`, {
		method,
		headers,
		body: body === undefined ? undefined : JSON.stringify(body)
	});
	if (res.status === 204) return undefined as T;
	const text = await res.text();
	let json: any = null;
	try {
		json = text ? JSON.parse(text) : null;
	} catch {
		// Not JSON: reported below with the status.
	}
	if (!res.ok) {
		const e = json?.error ?? {};
		throw new ApiError(res.status, e.kind ?? 'http', e.message ?? `HTTP ${res.status}`, e.line, e.column);
	}
	return json as T;
}

export interface WhoAmI {
	/** The token's name. */
	token: string;
	admin: boolean;
	tenant: string | null;
}

export interface Limits {
	timeout_ms: number | null;
	fuel: number | null;
	memory_bytes: number | null;
	concurrency: number | null;
}

export interface FunctionInfo {
	name: string;
	public: boolean;
	active_version: number | null;
	endpoint?: string;
	/** The tenant's own host, where the function answers at `/{name}` in an origin of its own. */
	host?: string | null;
	/** Whether the script sees the caller's `Authorization` header. */
	forward_authorization?: boolean;
	/** In force: the choices over the defaults, capped by the tenant's ceilings. */
	limits?: Limits;
	/** Chosen (`null`: the default). */
	chosen_limits?: Limits;
}

export interface Version {
	version: number;
	sha256: string;
	author: string;
	/** Unix ms. */
	created_at: number;
	active: boolean;
	source?: string;
}

/** A problem the editor's lint found: where (1-based) and what. */
export interface LintProblem {
	line: number;
	column: number;
	message: string;
}

export const enc = encodeURIComponent;

/** What to show of a failure: the API's message, or the error's. */
export function errorText(e: unknown): string {
	return e instanceof Error ? e.message : String(e);
}

/** Puts `text` on the clipboard; `false` when the browser refuses (no permission, no secure
 * context), so that the caller can say so instead of pretending. */
export async function copyText(text: string): Promise<boolean> {
	try {
		await navigator.clipboard.writeText(text);
		return true;
	} catch {
		// Older or locked-down browsers: a selected text area and the copy command.
		const area = document.createElement('textarea');
		area.value = text;
		area.setAttribute('readonly', '');
		area.style.position = 'fixed';
		area.style.opacity = '0';
		document.body.append(area);
		area.select();
		const ok = document.execCommand('copy');
		area.remove();
		return ok;
	}
}

/** The server's names (tenants, functions, tokens) as an input's `pattern`. Chromium compiles
 * patterns with the `v` flag, where a bare `-` at the end of a class is an error that turns
 * every check off; escaped, it is checked. */
export const NAME_PATTERN = '[a-z0-9][a-z0-9\\-]{0,62}';
