import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

export default defineConfig({
	plugins: [sveltekit()],
	build: { manifest: true, sourcemap: false },
	// `npm run dev` against a `picloud serve` on the default port.
	server: { proxy: { '/api': 'http://127.0.0.1:8080', '/fn': 'http://127.0.0.1:8080' } }
});
