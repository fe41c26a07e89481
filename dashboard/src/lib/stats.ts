// A function's traffic from GET …/stats (its invocation records).
import { api, enc } from './api';

export interface Bucket {
	start: number;
	invocations: number;
	errors: number;
	p50_ms: number | null;
	p99_ms: number | null;
}

export interface Stats {
	since: number;
	until: number;
	invocations: number;
	errors: number;
	by_outcome: Record<string, number>;
	p50_ms: number | null;
	p99_ms: number | null;
	last_at: number | null;
	buckets: Bucket[];
}

export function loadStats(tenant: string, name: string, minutes = 60, buckets = 60) {
	return api<Stats>(
		'GET',
		`/tenants/${enc(tenant)}/functions/${enc(name)}/stats?minutes=${minutes}&buckets=${buckets}`
	);
}

export const ms = (v: number | null) => (v === null ? '—' : v < 10 ? v.toFixed(2) : v.toFixed(0));
export const percent = (s: Stats) =>
	s.invocations ? `${((100 * s.errors) / s.invocations).toFixed(1)} %` : '—';
