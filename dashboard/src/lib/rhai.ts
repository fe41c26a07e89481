// Rhai highlighting for CodeMirror 6: a small stream tokenizer (keywords, strings with their
// `${…}` left plain, numbers, comments, operators). Highlighting only: the server's parser
// and formatter are what judge a script.
import { StreamLanguage, type StreamParser } from '@codemirror/language';

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
}

const parser: StreamParser<State> = {
	name: 'rhai',
	startState: () => ({ comment: 0, backtick: false }),
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
		stream.next();
		return null;
	},
	languageData: { commentTokens: { line: '//', block: { open: '/*', close: '*/' } } }
};

export const rhai = StreamLanguage.define(parser);
