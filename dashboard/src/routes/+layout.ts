// A single-page app: the manager serves 200.html for every dashboard path.
export const ssr = false;
export const prerender = false;
