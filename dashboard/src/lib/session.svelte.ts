// Who is logged in, shared by every page.
import { api, setToken, token, type WhoAmI } from './api';

export const session = $state<{ me: WhoAmI | null; checked: boolean }>({ me: null, checked: false });

/** Checks the stored token (if any) with the server. */
export async function restore() {
	if (!token()) {
		session.checked = true;
		return;
	}
	try {
		session.me = await api<WhoAmI>('GET', '/whoami');
	} catch {
		setToken(null);
		session.me = null;
	}
	session.checked = true;
}

export async function login(value: string) {
	setToken(value.trim());
	try {
		session.me = await api<WhoAmI>('GET', '/whoami');
	} catch (e) {
		setToken(null);
		throw e;
	}
}

export function logout() {
	setToken(null);
	session.me = null;
}
