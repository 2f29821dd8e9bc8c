/**
 * The template language of BENCHMARKS.template.md — a small subset of
 * Mustache, with no escaping (the output is markdown):
 *
 *   {{name}}                 the value of `name` (names may hold ':' and '.', e.g. {{table:local}})
 *   {{#flag}} … {{/flag}}    the text in between when `flag` is true
 *   {{^flag}} … {{/flag}}    the text in between when `flag` is false
 *   {{! note }}              a note for the template's readers, dropped
 *
 * A section or note tag alone on its line takes the line with it, so a
 * dropped section leaves no blank line. Every name must be known: a name the
 * code does not provide (a typo in the template, or a value the code stopped
 * making) is an error, not an empty string. Sections of the same name do not
 * nest.
 */

const NOTE = /\{\{![\s\S]*?\}\}/g;
const NOTE_LINE = /^[ \t]*\{\{![\s\S]*?\}\}[ \t]*\r?\n/gm;
const TAG = /\{\{([#^/]?)([^{}]*)\}\}/g;
const STANDALONE_SECTION_TAG = /^[ \t]*(\{\{[#^/][^{}]*\}\})[ \t]*\r?\n/gm;
/** An innermost section: no other section opens inside it. */
const INNER_SECTION = /\{\{([#^])([^{}]+)\}\}((?:(?!\{\{[#^])[\s\S])*?)\{\{\/\2\}\}/;

/** Fill `template` (named `source` in errors) with `values` and `flags`. */
export function fill(source: string, template: string, values: Readonly<Record<string, string>>, flags: Readonly<Record<string, boolean>>): string {
  let text = template.replace(NOTE_LINE, '').replace(NOTE, '');
  const unknown = new Set<string>();
  for (const [tag, kind, name] of text.matchAll(TAG)) {
    if (kind === '' ? !Object.hasOwn(values, name!) : !Object.hasOwn(flags, name!)) unknown.add(tag);
  }
  if (unknown.size > 0) throw new Error(`${source}: unknown ${[...unknown].join(', ')} (known values: ${Object.keys(values).sort().join(' ')}; known flags: ${Object.keys(flags).sort().join(' ')})`);
  text = text.replace(STANDALONE_SECTION_TAG, '$1');
  for (;;) {
    const m = INNER_SECTION.exec(text);
    if (m === null) break;
    const [whole, kind, name, body] = m as unknown as [string, string, string, string];
    const keep = kind === '#' ? flags[name] === true : flags[name] !== true;
    text = text.slice(0, m.index) + (keep ? body : '') + text.slice(m.index + whole.length);
  }
  const stray = /\{\{[#^/][^{}]*\}\}/.exec(text);
  if (stray !== null) throw new Error(`${source}: section tag ${stray[0]} has no partner`);
  return text.replace(TAG, (_, _kind: string, name: string) => values[name]!);
}
