// Rhai highlighting for CodeMirror 6: a small stream tokenizer (keywords, strings with their
// `${…}` left plain, numbers, comments, operators). Highlighting only: the server's parser
// and formatter are what judge a script.
import { StreamLanguage, foldService, matchBrackets, type StreamParser } from '@codemirror/language';

const keywords = new Set(
	(
		'fn private let const if else switch while loop do until for in return throw try catch ' +
		'break continue import export as true false this is_def_var is_def_fn Fn call curry'
	).split(' ')
);

interface State {
	/** Inside a block comment this deep, or inside a backtick string. */
	comment: number;
	backtick: boolean;
	/** Brackets open at this point (outside strings and comments): the indentation level. */
	depth: number;
}

const parser: StreamParser<State> = {
	name: 'rhai',
	startState: () => ({ comment: 0, backtick: false, depth: 0 }),
	token(stream, state) {
		if (state.comment > 0) {
			while (!stream.eol()) {
				if (stream.match('/*')) state.comment++;
				else if (stream.match('*/')) {
					state.comment--;
					if (state.comment === 0) break;
				} else stream.next();
			}
			return 'comment';
		}
		if (state.backtick) {
			while (!stream.eol()) {
				if (stream.next() === '`') {
					state.backtick = false;
					break;
				}
			}
			return 'string';
		}
		if (stream.eatSpace()) return null;
		if (stream.match('//')) {
			stream.skipToEnd();
			return 'comment';
		}
		if (stream.match('/*')) {
			state.comment = 1;
			return 'comment';
		}
		if (stream.match('`')) {
			state.backtick = true;
			return 'string';
		}
		if (stream.match(/^#*"/)) {
			let escaped = false;
			let ch;
			while ((ch = stream.next()) != null) {
				if (ch === '"' && !escaped) break;
				escaped = !escaped && ch === '\\';
			}
			return 'string';
		}
		if (stream.match(/^'(\\.|[^'\\])'/)) return 'string';
		if (stream.match(/^(0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|\d[\d_]*(\.\d[\d_]*)?([eE][+-]?\d+)?)/))
			return 'number';
		if (stream.match(/^[A-Za-z_][A-Za-z0-9_]*/)) {
			const word = stream.current();
			if (keywords.has(word)) return 'keyword';
			return 'variableName';
		}
		if (stream.match(/^[-+*/%=<>!&|^?.:]+/)) return 'operator';
		const ch = stream.next();
		if (ch === '{' || ch === '(' || ch === '[') state.depth++;
		else if (ch === '}' || ch === ')' || ch === ']') state.depth = Math.max(0, state.depth - 1);
		return null;
	},
	// One level per open bracket; a line that starts by closing one sits a level out.
	indent(state, textAfter, cx) {
		const closing = /^\s*[}\])]/.test(textAfter) ? 1 : 0;
		return Math.max(0, state.depth - closing) * cx.unit;
	},
	languageData: {
		commentTokens: { line: '//', block: { open: '/*', close: '*/' } },
		// Typing a closing bracket alone on its line dedents it.
		indentOnInput: /^\s*[}\])]$/,
		closeBrackets: { brackets: ['(', '[', '{', '"', '`'] }
	}
};

export const rhai = StreamLanguage.define(parser);

/** Folding: a line that ends by opening a bracket folds to its matching close. */
export const rhaiFolding = foldService.of((state, lineStart, lineEnd) => {
	const text = state.sliceDoc(lineStart, lineEnd).replace(/\s*(\/\/.*)?$/, '');
	if (!/[{[(]$/.test(text)) return null;
	const open = lineStart + text.length - 1;
	const match = matchBrackets(state, open, 1);
	if (!match || !match.matched || !match.end) return null;
	const close = match.end.from;
	if (state.doc.lineAt(close).number === state.doc.lineAt(open).number) return null;
	return { from: open + 1, to: close };
});
