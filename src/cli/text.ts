/**
 * Text the command line prints that anyone could have written (names, ids, `meta`, what the user
 * typed), made safe for a terminal.
 */

// C0 and C1 controls, DEL, line and paragraph separators and bidirectional controls: a line break
// would break a table, ESC or CSI drive the terminal, a bidi override reorder what is shown. (A
// backslash stays as it is: `meta` is shown as JSON, which escapes its own.)
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

/**
 * Stored text as text output shows it: controls escaped as `\n`, `\u001b` … (names, externalIds
 * and meta are anyone's input). `--json` output is JSON, for programs rather than terminals.
 */
export const plain = (text: string): string =>
  text.replace(CONTROL, (c) =>
    c === "\n" ? "\\n" : c === "\r" ? "\\r" : c === "\t" ? "\\t" : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
